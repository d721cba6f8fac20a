//! ID tokens: a compact JWS checked against the provider's JWKS with `ring` (RS256 and ES256
//! only), then its claims (`iss`, `aud`/`azp`, `exp`, `iat`, `nonce`, `email_verified`).
//!
//! No I/O: the caller hands in the key set and refetches it once on [`JwtError::UnknownKey`]
//! (a provider that rotated its keys). `alg: none`, HS* and anything else are refused before a
//! key is looked at, so a token cannot choose a weaker check than the key's own.

use serde::Deserialize;
use serde_json::Value;

use crate::util::base64::decode_url;

/// Largest ID token accepted (Entra ID's, with groups, stay well below).
pub(crate) const MAX_TOKEN_BYTES: usize = 16 * 1024;
/// Clock skew allowed on `iat` and `exp`, in seconds.
pub(crate) const SKEW_SECS: i64 = 120;

/// Why an ID token was refused. The text is shown on the failure page and in the audit log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum JwtError {
    /// Not three base64url parts of JSON, or larger than [`MAX_TOKEN_BYTES`].
    Malformed(String),
    /// The header names an algorithm other than RS256 or ES256.
    Algorithm(String),
    /// No key in the set matches the header's `kid` (refetch the set once).
    UnknownKey(String),
    /// The signature does not verify with the matching key.
    BadSignature,
    /// A claim is missing or wrong.
    Claim(String),
}

impl std::fmt::Display for JwtError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            JwtError::Malformed(m) => write!(f, "id token: malformed: {m}"),
            JwtError::Algorithm(a) => {
                write!(f, "id token: algorithm {a:?} refused (RS256 or ES256 only)")
            }
            JwtError::UnknownKey(k) => write!(f, "id token: no provider key with kid {k:?}"),
            JwtError::BadSignature => write!(f, "id token: signature does not verify"),
            JwtError::Claim(m) => write!(f, "id token: {m}"),
        }
    }
}

/// One key of a JWKS (the fields this module uses).
#[derive(Debug, Clone, Deserialize)]
pub(crate) struct Jwk {
    /// Key id.
    #[serde(default)]
    kid: Option<String>,
    /// `RSA` or `EC`.
    kty: String,
    /// Intended use; a key marked `enc` is never used to verify.
    #[serde(default, rename = "use")]
    use_: Option<String>,
    /// RSA modulus and exponent (base64url).
    #[serde(default)]
    n: Option<String>,
    #[serde(default)]
    e: Option<String>,
    /// EC curve and point (base64url).
    #[serde(default)]
    crv: Option<String>,
    #[serde(default)]
    x: Option<String>,
    #[serde(default)]
    y: Option<String>,
}

/// A provider's key set (`jwks_uri`).
#[derive(Debug, Clone, Default, Deserialize)]
pub(crate) struct Jwks {
    /// The keys.
    pub(crate) keys: Vec<Jwk>,
}

/// What the token must say.
#[derive(Debug, Clone)]
pub(crate) struct Expected<'a> {
    /// The provider's issuer identifier, exactly.
    pub(crate) issuer: &'a str,
    /// Our client id.
    pub(crate) client_id: &'a str,
    /// The nonce sent with this sign-in.
    pub(crate) nonce: &'a str,
    /// Now, unix seconds.
    pub(crate) now: i64,
}

/// Who signed in, from a verified token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Identity {
    /// `sub`.
    pub(crate) subject: String,
    /// `email`, lowercased; verified.
    pub(crate) email: String,
    /// Google's hosted domain (`hd`), lowercased, when present.
    pub(crate) hosted_domain: Option<String>,
}

#[derive(Deserialize)]
struct Header {
    alg: String,
    #[serde(default)]
    kid: Option<String>,
}

fn part_json<T: serde::de::DeserializeOwned>(part: &str, what: &str) -> Result<T, JwtError> {
    let bytes = decode_url(part).map_err(|e| JwtError::Malformed(format!("{what}: {e}")))?;
    serde_json::from_slice(&bytes).map_err(|e| JwtError::Malformed(format!("{what}: {e}")))
}

/// The key `header` asks for, by `kid`, or the only key of the right type when it names none.
fn pick<'a>(keys: &'a Jwks, alg: &str, kid: Option<&str>) -> Result<&'a Jwk, JwtError> {
    let kty = if alg == "RS256" { "RSA" } else { "EC" };
    let mut usable = keys
        .keys
        .iter()
        .filter(|k| k.kty == kty && k.use_.as_deref() != Some("enc"));
    match kid {
        Some(kid) => usable
            .find(|k| k.kid.as_deref() == Some(kid))
            .ok_or_else(|| JwtError::UnknownKey(kid.to_string())),
        None => {
            let first = usable.next();
            match (first, usable.next()) {
                (Some(k), None) => Ok(k),
                _ => Err(JwtError::UnknownKey("(none given)".into())),
            }
        }
    }
}

fn field(v: &Option<String>, name: &str) -> Result<Vec<u8>, JwtError> {
    let text = v
        .as_deref()
        .ok_or_else(|| JwtError::Malformed(format!("provider key without {name}")))?;
    decode_url(text).map_err(|e| JwtError::Malformed(format!("provider key {name}: {e}")))
}

fn check_signature(key: &Jwk, alg: &str, input: &[u8], sig: &[u8]) -> Result<(), JwtError> {
    use ring::signature;
    let ok = if alg == "RS256" {
        let (n, e) = (field(&key.n, "n")?, field(&key.e, "e")?);
        // 2048 bits at least: ring refuses shorter moduli here.
        signature::RsaPublicKeyComponents { n, e }
            .verify(&signature::RSA_PKCS1_2048_8192_SHA256, input, sig)
            .is_ok()
    } else {
        if key.crv.as_deref() != Some("P-256") {
            return Err(JwtError::Malformed("ES256 key not on curve P-256".into()));
        }
        let (x, y) = (field(&key.x, "x")?, field(&key.y, "y")?);
        if x.len() != 32 || y.len() != 32 {
            return Err(JwtError::Malformed(
                "P-256 key coordinates not 32 bytes".into(),
            ));
        }
        let mut point = Vec::with_capacity(65);
        point.push(4);
        point.extend_from_slice(&x);
        point.extend_from_slice(&y);
        signature::UnparsedPublicKey::new(&signature::ECDSA_P256_SHA256_FIXED, point)
            .verify(input, sig)
            .is_ok()
    };
    if ok {
        Ok(())
    } else {
        Err(JwtError::BadSignature)
    }
}

fn claim_str<'a>(claims: &'a Value, name: &str) -> Result<&'a str, JwtError> {
    claims[name]
        .as_str()
        .ok_or_else(|| JwtError::Claim(format!("no {name} claim")))
}

fn claim_time(claims: &Value, name: &str) -> Result<i64, JwtError> {
    claims[name]
        .as_i64()
        .or_else(|| claims[name].as_f64().map(|f| f as i64))
        .ok_or_else(|| JwtError::Claim(format!("no numeric {name} claim")))
}

fn check_claims(claims: &Value, want: &Expected<'_>) -> Result<Identity, JwtError> {
    let iss = claim_str(claims, "iss")?;
    if iss != want.issuer {
        return Err(JwtError::Claim(format!(
            "issued by {iss:?}, not by {:?}",
            want.issuer
        )));
    }
    let audiences: Vec<&str> = match &claims["aud"] {
        Value::String(a) => vec![a.as_str()],
        Value::Array(list) => list.iter().filter_map(Value::as_str).collect(),
        _ => return Err(JwtError::Claim("no aud claim".into())),
    };
    if !audiences.contains(&want.client_id) {
        return Err(JwtError::Claim(format!(
            "meant for {audiences:?}, not for this hub's client id"
        )));
    }
    let azp = claims["azp"].as_str();
    if (audiences.len() > 1 || azp.is_some()) && azp != Some(want.client_id) {
        return Err(JwtError::Claim(format!(
            "several audiences and azp {azp:?} is not this hub's client id"
        )));
    }
    let exp = claim_time(claims, "exp")?;
    if exp <= want.now - SKEW_SECS {
        return Err(JwtError::Claim(format!("expired {} s ago", want.now - exp)));
    }
    let iat = claim_time(claims, "iat")?;
    if iat > want.now + SKEW_SECS {
        return Err(JwtError::Claim(format!(
            "issued {} s in the future (check the clocks)",
            iat - want.now
        )));
    }
    let nonce = claims["nonce"].as_str().unwrap_or("");
    let nonce_ok: bool =
        subtle::ConstantTimeEq::ct_eq(nonce.as_bytes(), want.nonce.as_bytes()).into();
    if want.nonce.is_empty() || !nonce_ok {
        return Err(JwtError::Claim(
            "nonce does not match this sign-in (a replayed or foreign token)".into(),
        ));
    }
    let subject = claim_str(claims, "sub")?.to_string();
    let email = claims["email"]
        .as_str()
        .filter(|e| e.contains('@'))
        .ok_or_else(|| JwtError::Claim("no email claim (ask for the `email` scope)".into()))?
        .to_ascii_lowercase();
    // Some providers (Cognito) send the boolean as a string.
    let verified = match &claims["email_verified"] {
        Value::Bool(b) => *b,
        Value::String(s) => s == "true",
        _ => false,
    };
    if !verified {
        return Err(JwtError::Claim(format!(
            "the provider has not verified the email {email}"
        )));
    }
    let hosted_domain = claims["hd"].as_str().map(str::to_ascii_lowercase);
    Ok(Identity {
        subject,
        email,
        hosted_domain,
    })
}

/// Checks `token` against `keys` and `want`; who signed in.
///
/// # Errors
/// [`JwtError`]; on [`JwtError::UnknownKey`] refetch the key set once and try again.
pub(crate) fn verify(token: &str, keys: &Jwks, want: &Expected<'_>) -> Result<Identity, JwtError> {
    if token.len() > MAX_TOKEN_BYTES {
        return Err(JwtError::Malformed(format!(
            "larger than {MAX_TOKEN_BYTES} bytes"
        )));
    }
    let parts: Vec<&str> = token.split('.').collect();
    let [head, body, sig] = parts[..] else {
        return Err(JwtError::Malformed("not three dot-separated parts".into()));
    };
    let header: Header = part_json(head, "header")?;
    if header.alg != "RS256" && header.alg != "ES256" {
        return Err(JwtError::Algorithm(header.alg));
    }
    let key = pick(keys, &header.alg, header.kid.as_deref())?;
    let sig = decode_url(sig).map_err(|e| JwtError::Malformed(format!("signature: {e}")))?;
    let input = &token.as_bytes()[..head.len() + 1 + body.len()];
    check_signature(key, &header.alg, input, &sig)?;
    let claims: Value = part_json(body, "claims")?;
    check_claims(&claims, want)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::util::base64::encode_url;
    use ring::rand::SystemRandom;
    use ring::signature::{self, EcdsaKeyPair, KeyPair, RsaKeyPair};
    use serde_json::json;

    pub(crate) const NOW: i64 = 1_800_000_000;

    /// The RSA test key (2048 bits, PKCS#1 DER, made with openssl for these tests only).
    const RSA_PK8: &[u8] = include_bytes!("../../../tests/fixtures/oidc/rsa-test-key.der");

    /// A signer for tokens in tests: ES256 (fresh key) or RS256 (the fixture key).
    pub(crate) enum Signer {
        Ec(EcdsaKeyPair, String),
        Rsa(RsaKeyPair, String),
    }

    impl Signer {
        pub(crate) fn ec(kid: &str) -> Signer {
            let rng = SystemRandom::new();
            let alg = &signature::ECDSA_P256_SHA256_FIXED_SIGNING;
            let pk8 = EcdsaKeyPair::generate_pkcs8(alg, &rng).unwrap();
            Signer::Ec(
                EcdsaKeyPair::from_pkcs8(alg, pk8.as_ref(), &rng).unwrap(),
                kid.into(),
            )
        }

        pub(crate) fn rsa(kid: &str) -> Signer {
            Signer::Rsa(RsaKeyPair::from_der(RSA_PK8).unwrap(), kid.into())
        }

        pub(crate) fn jwk(&self) -> Value {
            match self {
                Signer::Ec(k, kid) => {
                    let p = k.public_key().as_ref();
                    json!({"kty":"EC","crv":"P-256","kid":kid,"use":"sig",
                           "x":encode_url(&p[1..33]),"y":encode_url(&p[33..65])})
                }
                Signer::Rsa(k, kid) => {
                    let c: signature::RsaPublicKeyComponents<Vec<u8>> = k.public().into();
                    json!({"kty":"RSA","kid":kid,"use":"sig",
                        "n":encode_url(&c.n), "e":encode_url(&c.e)})
                }
            }
        }

        pub(crate) fn jwks(signers: &[&Signer]) -> Jwks {
            let keys: Vec<Value> = signers.iter().map(|s| s.jwk()).collect();
            serde_json::from_value(json!({ "keys": keys })).unwrap()
        }

        pub(crate) fn sign_with(&self, header: &Value, claims: &Value) -> String {
            let input = format!(
                "{}.{}",
                encode_url(header.to_string().as_bytes()),
                encode_url(claims.to_string().as_bytes())
            );
            let rng = SystemRandom::new();
            let sig = match self {
                Signer::Ec(k, _) => k.sign(&rng, input.as_bytes()).unwrap().as_ref().to_vec(),
                Signer::Rsa(k, _) => {
                    let mut sig = vec![0; k.public().modulus_len()];
                    k.sign(
                        &signature::RSA_PKCS1_SHA256,
                        &rng,
                        input.as_bytes(),
                        &mut sig,
                    )
                    .unwrap();
                    sig
                }
            };
            format!("{input}.{}", encode_url(&sig))
        }

        pub(crate) fn sign(&self, claims: &Value) -> String {
            let (alg, kid) = match self {
                Signer::Ec(_, kid) => ("ES256", kid),
                Signer::Rsa(_, kid) => ("RS256", kid),
            };
            self.sign_with(&json!({"alg":alg,"kid":kid,"typ":"JWT"}), claims)
        }
    }

    pub(crate) fn claims() -> Value {
        json!({"iss":"https://idp.example","aud":"hub-client","sub":"u1","exp":NOW+300,
               "iat":NOW-5,"nonce":"n-1","email":"Ada@Example.org","email_verified":true})
    }

    fn want() -> Expected<'static> {
        Expected {
            issuer: "https://idp.example",
            client_id: "hub-client",
            nonce: "n-1",
            now: NOW,
        }
    }

    fn with(mut c: Value, key: &str, v: Value) -> Value {
        c[key] = v;
        c
    }

    #[test]
    fn good_rs256_and_es256_tokens_give_the_lowercased_verified_email() {
        for signer in [Signer::rsa("r1"), Signer::ec("e1")] {
            let keys = Signer::jwks(&[&signer]);
            let id = verify(&signer.sign(&claims()), &keys, &want()).unwrap();
            assert_eq!(id.email, "ada@example.org");
            assert_eq!(id.subject, "u1");
        }
    }

    #[test]
    fn a_token_signed_by_another_key_with_the_same_kid_is_refused() {
        let real = Signer::ec("k");
        let forger = Signer::ec("k");
        let keys = Signer::jwks(&[&real]);
        assert_eq!(
            verify(&forger.sign(&claims()), &keys, &want()),
            Err(JwtError::BadSignature)
        );
        // A tampered payload under a genuine signature fails the same way.
        let good = real.sign(&claims());
        let parts: Vec<&str> = good.split('.').collect();
        let other = encode_url(
            with(claims(), "email", json!("eve@example.org"))
                .to_string()
                .as_bytes(),
        );
        let tampered = format!("{}.{}.{}", parts[0], other, parts[2]);
        assert_eq!(
            verify(&tampered, &keys, &want()),
            Err(JwtError::BadSignature)
        );
    }

    #[test]
    fn alg_none_hs256_and_others_are_refused_before_any_key_is_used() {
        let s = Signer::ec("k");
        let keys = Signer::jwks(&[&s]);
        for alg in ["none", "HS256", "HS512", "RS512", "PS256", "ES384"] {
            let token = s.sign_with(&json!({"alg":alg,"kid":"k"}), &claims());
            assert_eq!(
                verify(&token, &keys, &want()),
                Err(JwtError::Algorithm(alg.into())),
                "{alg}"
            );
        }
        let unsigned = format!(
            "{}.{}.",
            encode_url(br#"{"alg":"none"}"#),
            encode_url(claims().to_string().as_bytes())
        );
        assert_eq!(
            verify(&unsigned, &keys, &want()),
            Err(JwtError::Algorithm("none".into()))
        );
    }

    #[test]
    fn an_es256_header_cannot_use_an_rsa_key_and_vice_versa() {
        let rsa = Signer::rsa("same");
        let ec = Signer::ec("same");
        let keys = Signer::jwks(&[&rsa]);
        assert_eq!(
            verify(&ec.sign(&claims()), &keys, &want()),
            Err(JwtError::UnknownKey("same".into()))
        );
    }

    #[test]
    fn an_unknown_kid_is_reported_so_the_caller_can_refetch_the_rotated_set() {
        let old = Signer::ec("old");
        let new = Signer::ec("new");
        let token = new.sign(&claims());
        assert_eq!(
            verify(&token, &Signer::jwks(&[&old]), &want()),
            Err(JwtError::UnknownKey("new".into()))
        );
        assert!(verify(&token, &Signer::jwks(&[&old, &new]), &want()).is_ok());
    }

    #[test]
    fn each_wrong_claim_is_refused_with_its_own_reason() {
        let s = Signer::rsa("r");
        let keys = Signer::jwks(&[&s]);
        let cases = [
            (
                with(claims(), "iss", json!("https://evil.example")),
                "issued by",
            ),
            (with(claims(), "aud", json!("other-client")), "meant for"),
            (
                with(claims(), "aud", json!(["hub-client", "other"])),
                "several audiences",
            ),
            (with(claims(), "exp", json!(NOW - SKEW_SECS - 1)), "expired"),
            (with(claims(), "iat", json!(NOW + SKEW_SECS + 60)), "future"),
            (with(claims(), "nonce", json!("n-2")), "nonce"),
            (with(claims(), "nonce", Value::Null), "nonce"),
            (
                with(claims(), "email_verified", json!(false)),
                "not verified",
            ),
            (
                with(claims(), "email_verified", Value::Null),
                "not verified",
            ),
            (with(claims(), "email", Value::Null), "no email"),
        ];
        for (c, reason) in cases {
            match verify(&s.sign(&c), &keys, &want()) {
                Err(JwtError::Claim(m)) => assert!(m.contains(reason), "{m} vs {reason}"),
                other => panic!("{c}: {other:?}"),
            }
        }
        // Within the skew, and with several audiences whose azp is ours: accepted.
        let ok = with(
            with(claims(), "aud", json!(["hub-client", "other"])),
            "azp",
            json!("hub-client"),
        );
        let ok = with(with(ok, "exp", json!(NOW - 10)), "iat", json!(NOW + 10));
        let ok = with(ok, "email_verified", json!("true"));
        assert!(verify(&s.sign(&ok), &keys, &want()).is_ok());
    }

    #[test]
    fn garbage_and_oversized_tokens_are_malformed() {
        let keys = Jwks::default();
        for t in ["", "a.b", "a.b.c.d", "!!.e30.", "e30.e30.e30"] {
            assert!(
                matches!(verify(t, &keys, &want()), Err(JwtError::Malformed(_))),
                "{t}"
            );
        }
        let big = "a".repeat(MAX_TOKEN_BYTES + 1);
        assert!(matches!(
            verify(&big, &keys, &want()),
            Err(JwtError::Malformed(_))
        ));
    }
}
