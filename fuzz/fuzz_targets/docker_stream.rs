//! The Engine's multiplexed attach/exec/logs stream (`[kind,0,0,0,len_be32]` frames), read
//! frame by frame through a reader that returns it in pieces (as a socket does) and whole
//! (`demux_all`), then as terminal text (ANSI stripping, authorize and session URLs, capped
//! capture). Both readings agree; nothing panics.
#![no_main]

use std::io::Read;

use libfuzzer_sys::fuzz_target;

/// Hands out `data` in pieces whose sizes cycle through `cuts`.
struct Pieces<'a> {
    data: &'a [u8],
    cuts: &'a [u8],
    n: usize,
}

impl Read for Pieces<'_> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let want = if self.cuts.is_empty() {
            buf.len()
        } else {
            usize::from(self.cuts[self.n % self.cuts.len()]).max(1)
        };
        self.n += 1;
        let k = want.min(buf.len()).min(self.data.len());
        buf[..k].copy_from_slice(&self.data[..k]);
        self.data = &self.data[k..];
        Ok(k)
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((&ncuts, rest)) = data.split_first() else {
        return;
    };
    let ncuts = usize::from(ncuts % 8).min(rest.len());
    let (cuts, stream) = rest.split_at(ncuts);
    let whole = llmbox::fuzzing::docker_demux_all(stream);
    let mut pieces = Pieces {
        data: stream,
        cuts,
        n: 0,
    };
    let framed = llmbox::fuzzing::docker_frames(&mut pieces);
    match (&whole, &framed) {
        (Ok(all), Ok(frames)) => {
            let joined: Vec<u8> = frames.iter().flat_map(|(_, p)| p.clone()).collect();
            assert_eq!(&joined, all);
            assert!(frames.iter().all(|(k, _)| *k <= 2));
            let (clean, urls, _session) = llmbox::fuzzing::terminal_text(all);
            assert!(!clean.contains('\r'));
            for (at, url) in urls {
                assert!(at <= clean.len());
                assert!(url.starts_with("https://"), "{url:?}");
            }
        }
        (Err(_), Err(_)) => {}
        _ => panic!("whole {whole:?} vs in pieces {framed:?}"),
    }
    // Raw terminal bytes (a TTY box's output is not multiplexed).
    llmbox::fuzzing::terminal_text(stream);
});
