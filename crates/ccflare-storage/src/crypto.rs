//! Secrets at rest: the key that encrypts account keys and OAuth tokens in the database, and
//! the form of an encrypted value. AES-256-GCM from `ring`, a fresh random 96-bit nonce for
//! every value written, and the value's place (`accounts.credential` of row 7) bound in as
//! associated data, so a value copied to another row or column does not decrypt. A stored
//! value is text, `enc:v1:<key id>:<base64 of nonce, ciphertext and tag>`; anything else is
//! plaintext (what every row was before an encryption key was configured), so both kinds are
//! told apart row by row and a database can be half-migrated only inside a transaction.
//!
//! The row id, not the account name, is what is bound: it stays when an account is renamed,
//! and a name can pass from a removed account to a new one.
//!
//! The key id is the first four bytes of a SHA-256 of the key: it tells "encrypted with
//! another key" from "altered", and names keys in messages, without telling anything of the
//! key (guessing a 256-bit key it would confirm is out of reach).

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD_NO_PAD;
use ccflare_core::Secret;
use ccflare_core::config::{ENCRYPTION_KEY_FORMAT, EncryptionKeySetting, decode_encryption_key};
use ring::aead::{AES_256_GCM, Aad, LessSafeKey, NONCE_LEN, Nonce, UnboundKey};
use ring::rand::{SecureRandom, SystemRandom};
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// What every encrypted value starts with; the version names the format and the algorithm.
const PREFIX: &str = "enc:v1:";

/// The file systemd's `LoadCredential=ccflare-encryption-key:…` puts in
/// `$CREDENTIALS_DIRECTORY`.
pub const CREDENTIAL_NAME: &str = "ccflare-encryption-key";

/// The key that encrypts secrets in the database. Cheap to clone; `Debug` shows its id only.
#[derive(Clone)]
pub struct EncryptionKey {
    key: Arc<LessSafeKey>,
    id: KeyId,
}

/// The first four bytes of a SHA-256 of a key, shown as 8 hex characters.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct KeyId([u8; 4]);

impl fmt::Display for KeyId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for byte in self.0 {
            write!(f, "{byte:02x}")?;
        }
        Ok(())
    }
}

impl KeyId {
    fn parse(text: &str) -> Option<KeyId> {
        if text.len() != 8 || !text.bytes().all(|b| b.is_ascii_hexdigit()) {
            return None;
        }
        let mut id = [0u8; 4];
        for (byte, i) in id.iter_mut().zip((0..8).step_by(2)) {
            *byte = u8::from_str_radix(&text[i..i + 2], 16).ok()?;
        }
        Some(KeyId(id))
    }
}

impl fmt::Debug for EncryptionKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "EncryptionKey({})", self.id)
    }
}

/// Why no key could be had from the configuration. Never carries the key's text.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("cannot read the encryption key file {path}: {error}")]
    Read {
        path: PathBuf,
        error: std::io::Error,
    },
    #[error("the encryption key in {path} is not a key: expected {ENCRYPTION_KEY_FORMAT}")]
    Format { path: PathBuf },
    #[error("the encryption key is not a key: expected {ENCRYPTION_KEY_FORMAT}")]
    Text,
}

impl EncryptionKey {
    pub fn from_bytes(bytes: &[u8; 32]) -> EncryptionKey {
        let unbound = UnboundKey::new(&AES_256_GCM, bytes).expect("32 bytes is an AES-256 key");
        let digest = ring::digest::digest(
            &ring::digest::SHA256,
            &[b"ccflare encryption key id\0".as_slice(), bytes.as_slice()].concat(),
        );
        let mut id = [0u8; 4];
        id.copy_from_slice(&digest.as_ref()[..4]);
        EncryptionKey {
            key: Arc::new(LessSafeKey::new(unbound)),
            id: KeyId(id),
        }
    }

    /// A key written as 64 hex characters or base64 (`core::config::decode_encryption_key`).
    pub fn parse(text: &str) -> Result<EncryptionKey, KeyError> {
        decode_encryption_key(text)
            .map(|bytes| EncryptionKey::from_bytes(&bytes))
            .ok_or(KeyError::Text)
    }

    /// The key in a file (the whole file, a final newline allowed).
    pub fn read_file(path: &Path) -> Result<EncryptionKey, KeyError> {
        let text = std::fs::read_to_string(path).map_err(|error| KeyError::Read {
            path: path.to_owned(),
            error,
        })?;
        decode_encryption_key(&text)
            .map(|bytes| EncryptionKey::from_bytes(&bytes))
            .ok_or_else(|| KeyError::Format {
                path: path.to_owned(),
            })
    }

    /// The configured key: the `encryption_key` option, else the file of
    /// `encryption_key_file`, else `ccflare-encryption-key` in `credentials_directory` (systemd's
    /// `$CREDENTIALS_DIRECTORY`) when that file exists; `None` when there is none at all.
    pub fn configured(
        setting: &EncryptionKeySetting,
        credentials_directory: Option<&Path>,
    ) -> Result<Option<EncryptionKey>, KeyError> {
        match setting {
            EncryptionKeySetting::Key(text) => EncryptionKey::parse(text.expose()).map(Some),
            EncryptionKeySetting::File(path) => EncryptionKey::read_file(Path::new(path)).map(Some),
            EncryptionKeySetting::None => {
                let Some(path) = credentials_directory.map(|dir| dir.join(CREDENTIAL_NAME)) else {
                    return Ok(None);
                };
                if path.exists() {
                    EncryptionKey::read_file(&path).map(Some)
                } else {
                    Ok(None)
                }
            }
        }
    }

    pub fn id(&self) -> KeyId {
        self.id
    }
}

/// Where a secret is stored: bound into its encryption, so that it decrypts nowhere else.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Column {
    /// `accounts.credential`: an API key, or an OAuth account's access token.
    Credential,
    /// `accounts.refresh_token`.
    RefreshToken,
}

impl Column {
    pub fn name(self) -> &'static str {
        match self {
            Column::Credential => "credential",
            Column::RefreshToken => "refresh_token",
        }
    }

    fn associated_data(self, row: i64) -> String {
        format!("ccflare accounts.{} {row}", self.name())
    }
}

/// Why a stored value could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SecretError {
    #[error(
        "account credentials in the database are encrypted (key {stored}) but no encryption key \
         is configured: set CCFLARE_ENCRYPTION_KEY_FILE (or CCFLARE_ENCRYPTION_KEY) to the key \
         they were encrypted with"
    )]
    NoKey { stored: KeyId },
    #[error(
        "account credentials in the database were encrypted with key {stored}, but the \
         configured encryption key is {configured}: configure the key they were encrypted with"
    )]
    WrongKey { stored: KeyId, configured: KeyId },
    #[error(
        "accounts.{column} of account #{row} does not decrypt with key {key}: it was altered or \
         copied from another row"
    )]
    Altered {
        column: &'static str,
        row: i64,
        key: KeyId,
    },
    #[error("accounts.{column} of account #{row} is not a value ccflare wrote (unknown format)")]
    Malformed { column: &'static str, row: i64 },
}

/// Whether a stored value is encrypted (else it is plaintext).
pub fn is_encrypted(stored: &str) -> bool {
    stored.starts_with(PREFIX)
}

/// The key id an encrypted value names; `None` for plaintext or an unknown format.
pub fn stored_key_id(stored: &str) -> Option<KeyId> {
    let rest = stored.strip_prefix(PREFIX)?;
    KeyId::parse(rest.split(':').next()?)
}

/// The value to store for `secret` in `column` of row `row`: encrypted with `key`, or the
/// plaintext when there is no key (as before encryption existed).
pub fn seal(key: Option<&EncryptionKey>, column: Column, row: i64, secret: &Secret) -> String {
    let Some(key) = key else {
        return secret.expose().to_owned();
    };
    let mut nonce = [0u8; NONCE_LEN];
    // The system's randomness failing is not something to store a secret through.
    SystemRandom::new()
        .fill(&mut nonce)
        .expect("the system's random number generator works");
    let mut sealed = secret.expose().as_bytes().to_vec();
    key.key
        .seal_in_place_append_tag(
            Nonce::assume_unique_for_key(nonce),
            Aad::from(column.associated_data(row).as_bytes()),
            &mut sealed,
        )
        .expect("AES-GCM seals any value shorter than 64 GiB");
    let mut bytes = nonce.to_vec();
    bytes.extend_from_slice(&sealed);
    format!("{PREFIX}{}:{}", key.id, STANDARD_NO_PAD.encode(bytes))
}

/// The secret a stored value holds: decrypted with `key` when encrypted, as it is when
/// plaintext.
pub fn open(
    key: Option<&EncryptionKey>,
    column: Column,
    row: i64,
    stored: &str,
) -> Result<Secret, SecretError> {
    let Some(rest) = stored.strip_prefix(PREFIX) else {
        return Ok(Secret::new(stored));
    };
    let malformed = || SecretError::Malformed {
        column: column.name(),
        row,
    };
    let (id, body) = rest.split_once(':').ok_or_else(malformed)?;
    let stored_id = KeyId::parse(id).ok_or_else(malformed)?;
    let Some(key) = key else {
        return Err(SecretError::NoKey { stored: stored_id });
    };
    if stored_id != key.id {
        return Err(SecretError::WrongKey {
            stored: stored_id,
            configured: key.id,
        });
    }
    let mut bytes = STANDARD_NO_PAD.decode(body).map_err(|_| malformed())?;
    if bytes.len() < NONCE_LEN {
        return Err(malformed());
    }
    let mut sealed = bytes.split_off(NONCE_LEN);
    let nonce = Nonce::try_assume_unique_for_key(&bytes).map_err(|_| malformed())?;
    let plain = key
        .key
        .open_in_place(
            nonce,
            Aad::from(column.associated_data(row).as_bytes()),
            &mut sealed,
        )
        .map_err(|_| SecretError::Altered {
            column: column.name(),
            row,
            key: key.id,
        })?;
    let text = std::str::from_utf8(plain).map_err(|_| malformed())?;
    Ok(Secret::new(text))
}

/// The hash a credential is found by (`accounts.credential_hash`): SHA-256 in hex. Keys and
/// tokens are long random strings, so a plain hash cannot be reversed by guessing; it finds a
/// key already stored without decrypting every row, and keeps duplicates out (a UNIQUE index)
/// now that two encryptions of one key differ.
pub fn credential_hash(secret: &Secret) -> String {
    let digest = ring::digest::digest(&ring::digest::SHA256, secret.expose().as_bytes());
    digest.as_ref().iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(byte: u8) -> EncryptionKey {
        EncryptionKey::from_bytes(&[byte; 32])
    }

    const TOKEN: &str = "sk-ant-api03-crypto-test-0123456789-wxyz";

    #[test]
    fn a_value_round_trips_and_shows_nothing_of_the_secret() {
        let key = key(7);
        let secret = Secret::new(TOKEN);
        let stored = seal(Some(&key), Column::Credential, 3, &secret);
        assert!(
            is_encrypted(&stored) && !stored.contains("sk-ant-"),
            "{stored}"
        );
        assert_eq!(stored_key_id(&stored), Some(key.id()));
        assert_eq!(
            open(Some(&key), Column::Credential, 3, &stored),
            Ok(secret.clone())
        );
        // A fresh nonce each time: the same secret never reads the same twice.
        assert_ne!(stored, seal(Some(&key), Column::Credential, 3, &secret));
        // Without a key, a value is stored and read as it is.
        let plain = seal(None, Column::Credential, 3, &secret);
        assert_eq!(plain, TOKEN);
        assert_eq!(open(Some(&key), Column::Credential, 3, &plain), Ok(secret));
    }

    #[test]
    fn a_value_opens_only_in_its_place_and_with_its_key() {
        let key = key(7);
        let stored = seal(Some(&key), Column::Credential, 3, &Secret::new(TOKEN));
        assert_eq!(
            open(Some(&key), Column::Credential, 4, &stored),
            Err(SecretError::Altered {
                column: "credential",
                row: 4,
                key: key.id()
            })
        );
        assert!(matches!(
            open(Some(&key), Column::RefreshToken, 3, &stored),
            Err(SecretError::Altered { .. })
        ));
        let other = self::key(8);
        assert_eq!(
            open(Some(&other), Column::Credential, 3, &stored),
            Err(SecretError::WrongKey {
                stored: key.id(),
                configured: other.id()
            })
        );
        assert_eq!(
            open(None, Column::Credential, 3, &stored),
            Err(SecretError::NoKey { stored: key.id() })
        );
        // One flipped character of the ciphertext.
        let mut altered = stored.clone().into_bytes();
        let last = altered.len() - 3;
        altered[last] = if altered[last] == b'A' { b'B' } else { b'A' };
        let altered = String::from_utf8(altered).unwrap();
        assert!(matches!(
            open(Some(&key), Column::Credential, 3, &altered),
            Err(SecretError::Altered { .. })
        ));
        for bad in [
            "enc:v1:",
            "enc:v1:nothex12:AAAA",
            "enc:v1:00000000",
            "enc:v1:00000000:!",
        ] {
            assert!(
                matches!(
                    open(Some(&key), Column::Credential, 3, bad),
                    Err(SecretError::Malformed { .. } | SecretError::WrongKey { .. })
                ),
                "{bad}"
            );
        }
    }

    #[test]
    fn messages_name_key_ids_never_keys() {
        let key = key(7);
        assert_eq!(format!("{key:?}"), format!("EncryptionKey({})", key.id()));
        assert_eq!(key.id().to_string().len(), 8);
        let error = SecretError::NoKey { stored: key.id() }.to_string();
        assert!(error.contains("CCFLARE_ENCRYPTION_KEY_FILE"), "{error}");
    }

    #[test]
    fn the_key_comes_from_the_option_the_file_or_systemds_credentials() {
        let dir = tempfile::tempdir().unwrap();
        let hex = "0707070707070707070707070707070707070707070707070707070707070707";
        let file = dir.path().join("key");
        std::fs::write(&file, format!("{hex}\n")).unwrap();
        let from_file = EncryptionKey::configured(
            &EncryptionKeySetting::File(file.display().to_string()),
            None,
        )
        .unwrap()
        .unwrap();
        assert_eq!(from_file.id(), key(7).id());
        let inline = EncryptionKey::configured(&EncryptionKeySetting::Key(Secret::new(hex)), None)
            .unwrap()
            .unwrap();
        assert_eq!(inline.id(), key(7).id());
        assert!(
            EncryptionKey::configured(&EncryptionKeySetting::None, Some(dir.path()))
                .unwrap()
                .is_none()
        );
        std::fs::write(dir.path().join(CREDENTIAL_NAME), hex).unwrap();
        let systemd = EncryptionKey::configured(&EncryptionKeySetting::None, Some(dir.path()))
            .unwrap()
            .unwrap();
        assert_eq!(systemd.id(), key(7).id());

        std::fs::write(&file, "oops-not-a-key").unwrap();
        let error = EncryptionKey::configured(
            &EncryptionKeySetting::File(file.display().to_string()),
            None,
        )
        .unwrap_err()
        .to_string();
        assert!(
            error.contains("is not a key") && !error.contains("oops"),
            "{error}"
        );
        let missing = dir.path().join("missing");
        let error = EncryptionKey::read_file(&missing).unwrap_err().to_string();
        assert!(
            error.starts_with("cannot read the encryption key file"),
            "{error}"
        );
    }

    #[test]
    fn credential_hashes_are_sha256_hex() {
        assert_eq!(
            credential_hash(&Secret::new("abc")),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }
}
