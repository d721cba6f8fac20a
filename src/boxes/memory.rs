//! An in-memory [`BoxManager`] for testing the layers above the Docker layer (cluster, hub).
//!
//! It follows the same rules as the Docker manager where they are observable from above:
//! box-id validation, case-insensitive uniqueness and the ceiling under one lock, `bad-code`
//! fails a login (and a fresh sign-in link follows, as from a box whose login loops), reap
//! takes only pending boxes. `exec` of `["sleep", secs]` really sleeps, so
//! deadline and disconnect paths can be exercised; any other command echoes its arguments.

use std::sync::Mutex;
use std::time::{Duration, Instant};

use super::{
    BoxError, BoxInfo, BoxManager, ContainerId, CreateOptions, Created, ExecResult, Phase,
};

/// The code that makes a fake login fail, as the test box's fake `claude` does.
pub const BAD_CODE: &str = "bad-code";

struct MemBox {
    id: ContainerId,
    box_id: String,
    description: String,
    image: String,
    phase: Phase,
    created: Instant,
    created_unix: i64,
    logs: Vec<String>,
}

impl MemBox {
    fn short_id(&self) -> &str {
        self.id.short()
    }

    fn name(&self) -> String {
        match self.phase {
            Phase::Pending => format!("llmbox-pending-{}", self.short_id()),
            Phase::Ready => format!("llmbox-{}", self.short_id()),
        }
    }
}

/// A box manager that keeps boxes in a `Vec` behind a mutex.
pub struct MemoryBoxManager {
    namespace: String,
    max_boxes: usize,
    boxes: Mutex<Vec<MemBox>>,
    next: Mutex<u64>,
}

impl MemoryBoxManager {
    /// A manager for `namespace` holding at most `max_boxes` boxes.
    pub fn new(namespace: &str, max_boxes: usize) -> Self {
        MemoryBoxManager {
            namespace: namespace.to_string(),
            max_boxes,
            boxes: Mutex::new(Vec::new()),
            next: Mutex::new(0),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<MemBox>> {
        // A panic while holding this lock leaves plain data behind; keep serving.
        self.boxes.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn find<'a>(boxes: &'a mut [MemBox], key: &str) -> Result<&'a mut MemBox, BoxError> {
        if key.is_empty() {
            return Err(BoxError::NotFound(key.to_string()));
        }
        let matches: Vec<usize> = boxes
            .iter()
            .enumerate()
            .filter(|(_, b)| b.id.matches(key) || b.name() == key || b.box_id == key)
            .map(|(i, _)| i)
            .collect();
        match matches.as_slice() {
            [i] => Ok(&mut boxes[*i]),
            [] => Err(BoxError::NotFound(key.to_string())),
            many => Err(BoxError::ambiguous(key, many.len())),
        }
    }
}

impl BoxManager for MemoryBoxManager {
    fn create(&self, opts: CreateOptions) -> Result<Created, BoxError> {
        opts.validate()?;
        let mut boxes = self.lock();
        if boxes
            .iter()
            .any(|b| b.box_id.eq_ignore_ascii_case(&opts.box_id))
        {
            return Err(BoxError::DuplicateBoxId(opts.box_id));
        }
        if boxes.len() >= self.max_boxes {
            return Err(BoxError::TooManyBoxes(self.max_boxes));
        }
        let mut next = self.next.lock().unwrap_or_else(|e| e.into_inner());
        *next += 1;
        // Distinct in the first 12 characters, like Docker ids, so short ids identify a box.
        let id = format!("{:012x}{:052x}", *next, *next);
        let authorize_url = format!(
            "https://claude.com/cai/oauth/authorize?code=true&code_challenge=c{n}&state=s{n}",
            n = *next
        );
        let created_unix = crate::util::unix_now();
        boxes.push(MemBox {
            id: ContainerId::new(id.clone()),
            box_id: opts.box_id,
            description: opts.description,
            image: opts.image,
            phase: Phase::Pending,
            created: Instant::now(),
            created_unix,
            logs: vec![format!("Open this URL to sign in: {authorize_url}")],
        });
        Ok(Created { id, authorize_url })
    }

    fn submit_code(&self, id_or_name: &str, code: &str) -> Result<String, BoxError> {
        let code = super::validate_code(code)?;
        let mut boxes = self.lock();
        let b = Self::find(&mut boxes, id_or_name)?;
        if b.phase == Phase::Ready {
            return Err(BoxError::Box(format!(
                "box {} is already activated",
                b.box_id
            )));
        }
        if code == BAD_CODE {
            // Like a box whose login loops: the refusal, then a fresh sign-in link.
            b.logs.push("OAuth error: invalid code".into());
            b.logs.push(format!(
                "Open this URL to sign in: https://claude.com/cai/oauth/authorize?code=true&code_challenge=c{0}r{1}&state=s{0}r{1}",
                b.id.short(),
                b.logs.len()
            ));
            return Err(BoxError::Box(
                "login failed: OAuth error: invalid code".into(),
            ));
        }
        b.phase = Phase::Ready;
        let url = format!("https://claude.ai/code/session_{}", b.box_id);
        b.logs.push(url.clone());
        Ok(url)
    }

    fn list(&self) -> Result<Vec<BoxInfo>, BoxError> {
        Ok(self
            .lock()
            .iter()
            .map(|b| BoxInfo {
                container_id: b.short_id().into(),
                name: b.name(),
                box_id: b.box_id.clone(),
                description: b.description.clone(),
                spoke: self.namespace.clone(),
                image: b.image.clone(),
                state: "running".into(),
                status: "Up".into(),
                phase: b.phase,
                created: b.created_unix,
            })
            .collect())
    }

    fn destroy(&self, id_or_name: &str) -> Result<(), BoxError> {
        let mut boxes = self.lock();
        let id = Self::find(&mut boxes, id_or_name)?.id.clone();
        boxes.retain(|b| b.id != id);
        Ok(())
    }

    fn logs(&self, id_or_name: &str, tail: usize) -> Result<String, BoxError> {
        let mut boxes = self.lock();
        let b = Self::find(&mut boxes, id_or_name)?;
        let start = b.logs.len().saturating_sub(tail);
        Ok(b.logs[start..].join("\n"))
    }

    fn exec(&self, id_or_name: &str, cmd: &[String]) -> Result<ExecResult, BoxError> {
        Self::find(&mut self.lock(), id_or_name)?;
        match cmd {
            [] => Err(BoxError::InvalidArgument("empty command".into())),
            [sleep, secs] if sleep == "sleep" => {
                let secs: f64 = secs.parse().map_err(|_| {
                    BoxError::InvalidArgument(format!("sleep: bad duration {secs:?}"))
                })?;
                std::thread::sleep(Duration::from_secs_f64(secs.clamp(0.0, 3600.0)));
                Ok(ExecResult::default())
            }
            _ => Ok(ExecResult {
                stdout: cmd.join(" "),
                stderr: String::new(),
                exit_code: 0,
            }),
        }
    }

    fn reap(&self, ttl: Duration) -> Result<Vec<String>, BoxError> {
        let mut boxes = self.lock();
        let mut reaped = Vec::new();
        boxes.retain(|b| {
            let old = b.phase == Phase::Pending && b.created.elapsed() >= ttl;
            if old {
                reaped.push(b.short_id().to_string());
            }
            !old
        });
        Ok(reaped)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn opts(id: &str) -> CreateOptions {
        CreateOptions {
            image: "img".into(),
            box_id: id.into(),
            ..Default::default()
        }
    }

    #[test]
    fn duplicate_ids_are_refused() {
        let m2 = MemoryBoxManager::new("local", 10);
        m2.create(opts("web")).expect("create");
        assert!(matches!(
            m2.create(opts("web")),
            Err(BoxError::DuplicateBoxId(_))
        ));
    }

    #[test]
    fn ceiling_and_activation_and_reap() {
        let m = MemoryBoxManager::new("local", 2);
        let a = m.create(opts("a")).expect("a");
        m.create(opts("b")).expect("b");
        assert!(matches!(
            m.create(opts("c")),
            Err(BoxError::TooManyBoxes(2))
        ));
        assert!(matches!(
            m.destroy("0000"),
            Err(BoxError::InvalidArgument(msg)) if msg.contains("matches 2 managed boxes")
        ));
        assert!(m.submit_code(&a.id, BAD_CODE).is_err());
        assert!(matches!(
            m.submit_code(&a.id, "go\u{3}od"),
            Err(BoxError::InvalidArgument(_))
        ));
        assert_eq!(m.list().expect("list")[0].phase, Phase::Pending);
        let url = m.submit_code(&a.id, "good").expect("activate");
        assert!(url.ends_with("session_a"));
        let reaped = m.reap(Duration::ZERO).expect("reap");
        assert_eq!(reaped.len(), 1, "only the pending box is reaped");
        assert_eq!(m.list().expect("list")[0].phase, Phase::Ready);
    }
}
