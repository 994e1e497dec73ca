//! The log's writer: every line goes to stderr with the config's secrets masked as `***`, so a
//! credential reaches no log even when a broker's client library prints its URL.

use std::io::Write;
use std::sync::RwLock;

use tracing_subscriber::fmt::MakeWriter;

/// What the log masks: every secret of every config applied since the start (an old one may
/// still be in a library's retry messages).
static MASKED: RwLock<Vec<String>> = RwLock::new(Vec::new());

/// Masks these values in every log line from now on.
pub fn mask(secrets: &[String]) {
    let mut masked = MASKED.write().unwrap_or_else(|e| e.into_inner());
    for secret in secrets {
        if !masked.contains(secret) {
            masked.push(secret.clone());
        }
    }
    // The longest first, so that a secret holding another is masked whole.
    masked.sort_by_key(|s| std::cmp::Reverse(s.len()));
}

/// Makes stderr writers that mask secrets; the fmt layer writes each line in one call.
#[derive(Clone, Copy, Default)]
pub struct MaskedStderr;

impl<'a> MakeWriter<'a> for MaskedStderr {
    type Writer = MaskedWriter;

    fn make_writer(&'a self) -> MaskedWriter {
        MaskedWriter
    }
}

pub struct MaskedWriter;

impl Write for MaskedWriter {
    fn write(&mut self, line: &[u8]) -> std::io::Result<usize> {
        let masked = MASKED.read().unwrap_or_else(|e| e.into_inner());
        std::io::stderr().write_all(masked_line(line, &masked).as_bytes())?;
        Ok(line.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        std::io::stderr().flush()
    }
}

fn masked_line<'a>(line: &'a [u8], masked: &[String]) -> std::borrow::Cow<'a, str> {
    let mut text = String::from_utf8_lossy(line);
    for secret in masked {
        if text.contains(secret.as_str()) {
            text = text.replace(secret.as_str(), "***").into();
        }
    }
    text
}

#[cfg(test)]
mod tests {
    use super::masked_line;

    #[test]
    fn masks_every_secret_longest_first() {
        let masked = ["s3cret-longer".to_string(), "s3cret".to_string()];
        assert_eq!(
            masked_line(b"connecting to x://u:s3cret-longer@h, then s3cret\n", &masked),
            "connecting to x://u:***@h, then ***\n"
        );
        assert_eq!(masked_line(b"nothing here\n", &masked), "nothing here\n");
    }
}
