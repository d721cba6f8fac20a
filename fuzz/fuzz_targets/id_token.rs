//! Sign-in ID tokens (compact JWS) and the provider's JWKS, as the callback checks them. The
//! first byte picks the mode:
//! 0. the rest is a token checked against a fixed key set: it must always be refused (the
//!    target's P-256 key is made fresh each run, so nothing the fuzzer sends can be signed by
//!    it: an accepted token would be a bypass — `alg: none`, a key confusion, a parse slip);
//! 1. the rest is `header JSON \0 claims JSON`, signed here with that key, so the claim checks
//!    (`iss`, `aud`/`azp`, `exp`/`iat`, `nonce`, `email_verified`) are reached: an accepted
//!    token's email is lowercased and has an `@`;
//! 2. the rest is a JWKS checked with a fixed well-signed token.
#![no_main]

use std::sync::LazyLock;

use libfuzzer_sys::fuzz_target;
use llmbox::fuzzing::{Expected, id_token};
use llmbox::util::base64::encode_url;
use ring::rand::SystemRandom;
use ring::signature::{ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair, KeyPair};

const WANT: Expected<'static> = Expected {
    issuer: "https://issuer.test",
    client_id: "fuzz-client",
    nonce: "n0nce",
    now: 1_800_000_000,
};

struct Key {
    pair: EcdsaKeyPair,
    rng: SystemRandom,
    jwks: Vec<u8>,
    good: String,
}

impl Key {
    fn sign(&self, header: &[u8], claims: &[u8]) -> String {
        let input = format!("{}.{}", encode_url(header), encode_url(claims));
        let sig = self.pair.sign(&self.rng, input.as_bytes()).expect("sign");
        format!("{input}.{}", encode_url(sig.as_ref()))
    }
}

static KEY: LazyLock<Key> = LazyLock::new(|| {
    let rng = SystemRandom::new();
    let pkcs8 = EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &rng).expect("key");
    let pair = EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, pkcs8.as_ref(), &rng)
        .expect("key");
    let point = pair.public_key().as_ref();
    let (x, y) = (encode_url(&point[1..33]), encode_url(&point[33..65]));
    // An RSA key beside it (a made-up 2048-bit modulus) so `kid` and `kty` selection matter.
    let n = encode_url(&[0xc5; 256]);
    let jwks = serde_json::json!({"keys": [
        {"kty": "EC", "kid": "k1", "crv": "P-256", "x": x, "y": y, "use": "sig"},
        {"kty": "RSA", "kid": "r1", "n": n, "e": "AQAB"},
        {"kty": "EC", "kid": "enc", "crv": "P-256", "x": x, "y": y, "use": "enc"},
    ]});
    let mut key = Key {
        pair,
        rng,
        jwks: serde_json::to_vec(&jwks).expect("jwks"),
        good: String::new(),
    };
    let claims = serde_json::json!({
        "iss": WANT.issuer, "aud": WANT.client_id, "exp": WANT.now + 600, "iat": WANT.now,
        "nonce": WANT.nonce, "sub": "1", "email": "Fuzz@Example.test", "email_verified": true,
    });
    key.good = key.sign(
        br#"{"alg":"ES256","kid":"k1"}"#,
        &serde_json::to_vec(&claims).expect("claims"),
    );
    assert_eq!(
        id_token(&key.good, &key.jwks, &WANT).as_deref(),
        Ok("fuzz@example.test")
    );
    key
});

fuzz_target!(|data: &[u8]| {
    let key = &*KEY;
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    match mode % 3 {
        0 => {
            let token = String::from_utf8_lossy(rest);
            let got = id_token(&token, &key.jwks, &WANT);
            assert!(
                got.is_err(),
                "an unsigned token was accepted: {token:?} -> {got:?}"
            );
        }
        1 => {
            let (header, claims) = match rest.iter().position(|&b| b == 0) {
                Some(i) => (&rest[..i], &rest[i + 1..]),
                None => (rest, &b"{}"[..]),
            };
            let token = key.sign(header, claims);
            if let Ok(email) = id_token(&token, &key.jwks, &WANT) {
                assert!(email.contains('@'), "{email:?}");
                assert_eq!(email, email.to_ascii_lowercase());
            }
        }
        _ => {
            let _ = id_token(&key.good, rest, &WANT);
        }
    }
});
