//! Standard base64 (RFC 4648, with padding), as Go's `encoding/json` writes `[]byte`.
//! Hand-written because it is forty lines and the wire needs nothing more.

const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

/// Encodes `data` with padding.
pub fn encode(data: &[u8]) -> String {
    let mut out = String::with_capacity(data.len().div_ceil(3) * 4);
    for chunk in data.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(ALPHABET[(n >> (18 - 6 * i) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// Decodes padded standard base64 (unpadded input is accepted too).
///
/// # Errors
/// A message naming the first offending byte offset.
pub fn decode(text: &str) -> Result<Vec<u8>, String> {
    let trimmed = text.trim_end_matches('=');
    if text.len() - trimmed.len() > 2 || trimmed.len() % 4 == 1 {
        return Err("invalid base64: bad length or padding".into());
    }
    let mut out = Vec::with_capacity(trimmed.len() * 3 / 4);
    let mut acc: u32 = 0;
    let mut bits = 0;
    for (i, c) in trimmed.bytes().enumerate() {
        let v = match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'+' => 62,
            b'/' => 63,
            _ => return Err(format!("invalid base64: unexpected byte at offset {i}")),
        };
        acc = (acc << 6) | u32::from(v);
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
            acc &= (1 << bits) - 1;
        }
    }
    Ok(out)
}

/// Encodes `data` as unpadded base64url (RFC 4648 §5), as JOSE and PKCE write it.
pub fn encode_url(data: &[u8]) -> String {
    encode(data)
        .trim_end_matches('=')
        .replace('+', "-")
        .replace('/', "_")
}

/// Decodes unpadded base64url; standard-alphabet bytes and padding are refused, since JOSE
/// allows neither.
///
/// # Errors
/// A message naming what is wrong.
pub fn decode_url(text: &str) -> Result<Vec<u8>, String> {
    if text.contains(['+', '/', '=']) {
        return Err("invalid base64url: '+', '/' or padding".into());
    }
    decode(&text.replace('-', "+").replace('_', "/"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64url_round_trips_without_padding_and_refuses_the_standard_alphabet() {
        let data = [0xfbu8, 0xff, 0xfe, 0x00, 0x01];
        let text = encode_url(&data);
        assert_eq!(text, "-__-AAE");
        assert_eq!(decode_url(&text).unwrap(), data);
        assert!(decode_url("+//+AAE").is_err());
        assert!(decode_url("AA==").is_err());
    }

    #[test]
    fn rfc4648_vectors_round_trip() {
        let cases = [
            ("", ""),
            ("f", "Zg=="),
            ("fo", "Zm8="),
            ("foo", "Zm9v"),
            ("foob", "Zm9vYg=="),
            ("fooba", "Zm9vYmE="),
            ("foobar", "Zm9vYmFy"),
        ];
        for (plain, coded) in cases {
            assert_eq!(encode(plain.as_bytes()), coded);
            assert_eq!(decode(coded).expect(coded), plain.as_bytes());
        }
        let all: Vec<u8> = (0..=255).collect();
        assert_eq!(decode(&encode(&all)).expect("all bytes"), all);
    }

    #[test]
    fn garbage_is_an_error() {
        for bad in ["Z", "Zm9v!", "Zg===", "Z==="] {
            assert!(decode(bad).is_err(), "{bad}");
        }
    }
}
