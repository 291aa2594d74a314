//! SHA-256 digests written as lower-case hex: the checksums of migrations, of the rollup's SQL
//! and of every extract loaded.

use std::fmt::Write as _;

use sha2::{Digest, Sha256};

/// Lower-case hex SHA-256 of `bytes`.
pub fn sha256_hex(bytes: &[u8]) -> String {
    hex(&Sha256::digest(bytes))
}

/// Lower-case hex SHA-256 of a shipped SQL file's text, with CRLF line ends read as LF, so a
/// checkout that converted them checks the same.
pub fn sql_sha256_hex(text: &str) -> String {
    sha256_hex(text.replace("\r\n", "\n").as_bytes())
}

/// Lower-case hex of a digest.
pub fn hex(digest: &[u8]) -> String {
    digest
        .iter()
        .fold(String::with_capacity(digest.len() * 2), |mut out, b| {
            let _ = write!(out, "{b:02x}");
            out
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sha256_of_a_known_text() {
        // Known SHA-256 of "abc" (FIPS 180-2, appendix B.1).
        assert_eq!(
            sha256_hex(b"abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
        assert_eq!(hex(&[0x00, 0x0f, 0xa0, 0xff]), "000fa0ff");
    }

    #[test]
    fn sql_checksums_ignore_line_ends_only() {
        assert_eq!(sql_sha256_hex("a\r\nb\r\n"), sql_sha256_hex("a\nb\n"));
        assert_eq!(sql_sha256_hex("a\nb\n"), sha256_hex(b"a\nb\n"));
        assert_ne!(sql_sha256_hex("a\nb\n"), sql_sha256_hex("a\nb"));
    }
}
