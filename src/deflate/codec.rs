//! The DEFLATE side of permessage-deflate (RFC 7692 section 7.2), on zlib-rs: one message at a
//! time, compressed with a sync flush and its `00 00 ff ff` tail taken off, inflated with the
//! tail put back. The zlib state is made at the first message that needs it (an idle connection
//! holds none), and with no context takeover it is freed after every message.

use zlib_rs::{Deflate, DeflateConfig, DeflateFlush, Inflate, InflateFlush, Status};

/// What a sync flush ends with, left off the wire by RFC 7692.
const TAIL: [u8; 4] = [0x00, 0x00, 0xff, 0xff];

/// Why a compressed message could not be read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum InflateError {
    #[error("the message inflates past {0} bytes")]
    TooBig(usize),
    #[error("the message is not valid DEFLATE data")]
    Invalid,
}

/// How one end compresses: its window, memory and level.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Settings {
    pub window_bits: u8,
    pub mem_level: u8,
    pub level: u8,
    pub no_context_takeover: bool,
}

/// One end's compressor.
pub struct Compressor {
    settings: Settings,
    state: Option<Deflate>,
}

impl Compressor {
    pub fn new(settings: Settings) -> Compressor {
        Compressor { settings, state: None }
    }

    /// The compressed form of one message, as it goes in frames with RSV1 set.
    pub fn compress(&mut self, message: &[u8]) -> Vec<u8> {
        let Settings {
            window_bits,
            mem_level,
            level,
            no_context_takeover,
        } = self.settings;
        let state = self.state.get_or_insert_with(|| {
            Deflate::new_with_config(DeflateConfig {
                level: i32::from(level),
                window_bits: -i32::from(window_bits),
                mem_level: i32::from(mem_level),
                ..DeflateConfig::default()
            })
        });
        // Enough for most messages at once; deflate grows stored data by a few bytes per block.
        let mut out = Vec::with_capacity(message.len() / 2 + 64);
        let start_in = state.total_in();
        loop {
            let consumed = (state.total_in() - start_in) as usize;
            let before = state.total_out();
            let status = state
                .compress_uninit(&message[consumed..], out.spare_capacity_mut(), DeflateFlush::SyncFlush)
                .expect("deflate with a valid state and a sync flush does not fail");
            let written = (state.total_out() - before) as usize;
            // SAFETY: deflate initialized the `written` bytes after the vector's length.
            unsafe { out.set_len(out.len() + written) };
            let done = (state.total_in() - start_in) as usize == message.len() && out.len() < out.capacity();
            if done || status == Status::StreamEnd {
                break;
            }
            out.reserve(out.capacity().max(64));
        }
        if out.ends_with(&TAIL) {
            out.truncate(out.len() - TAIL.len());
        }
        // zlib writes nothing for an empty message after a flush; RFC 7692 section 7.2.3.6
        // writes it as the empty stored block's first byte, which the receiver's tail completes.
        if out.is_empty() {
            out.push(0x00);
        }
        if no_context_takeover {
            self.state = None;
        }
        out
    }
}

/// One end's inflater, following the peer's compressor.
pub struct Inflater {
    window_bits: u8,
    no_context_takeover: bool,
    state: Option<Inflate>,
}

impl Inflater {
    pub fn new(window_bits: u8, no_context_takeover: bool) -> Inflater {
        Inflater {
            window_bits,
            no_context_takeover,
            state: None,
        }
    }

    /// Inflates one message's payload; never more than `limit` bytes (plus one, to know the
    /// limit was passed): a small frame that inflates to gigabytes stops there.
    pub fn inflate(&mut self, payload: &[u8], limit: usize) -> Result<Vec<u8>, InflateError> {
        // Some peers send an empty message as no bytes at all, not as RFC 7692's 0x00.
        if payload.is_empty() {
            return Ok(Vec::new());
        }
        let window_bits = self.window_bits;
        let state = self.state.get_or_insert_with(|| Inflate::new(false, window_bits));
        let mut out = Vec::with_capacity(payload.len().saturating_mul(4).max(64).min(limit.saturating_add(1)));
        let inflated = inflate_into(state, payload, &mut out, limit).and_then(|ended| match ended {
            true => Ok(true),
            false => inflate_into(state, &TAIL, &mut out, limit),
        });
        // A stream that ended (a final block) or broke cannot go on; one without takeover need not.
        if self.no_context_takeover || !matches!(inflated, Ok(false)) {
            self.state = None;
        }
        inflated.map(|_| out)
    }
}

/// Inflates all of `input` onto `out`, growing it up to `limit + 1` bytes; whether the DEFLATE
/// stream ended (a final block).
fn inflate_into(state: &mut Inflate, input: &[u8], out: &mut Vec<u8>, limit: usize) -> Result<bool, InflateError> {
    let start_in = state.total_in();
    loop {
        if out.len() == out.capacity() {
            if out.len() > limit {
                return Err(InflateError::TooBig(limit));
            }
            let room = (limit + 1 - out.len()).min(out.capacity().max(64));
            out.reserve_exact(room);
        }
        let room = out.capacity().min(limit + 1) - out.len();
        let consumed = (state.total_in() - start_in) as usize;
        let before = state.total_out();
        let spare = &mut out.spare_capacity_mut()[..room];
        let status = state
            .decompress_uninit(&input[consumed..], spare, InflateFlush::SyncFlush)
            .map_err(|_| InflateError::Invalid)?;
        let written = (state.total_out() - before) as usize;
        // SAFETY: inflate initialized the `written` bytes after the vector's length.
        unsafe { out.set_len(out.len() + written) };
        if out.len() > limit {
            return Err(InflateError::TooBig(limit));
        }
        match status {
            Status::StreamEnd => return Ok(true),
            // All input read and room left: inflate has nothing more to give.
            _ if (state.total_in() - start_in) as usize == input.len() && written < room => return Ok(false),
            Status::BufError if written == 0 && room > 0 => return Err(InflateError::Invalid),
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(window_bits: u8, no_context_takeover: bool) -> Settings {
        Settings {
            window_bits,
            mem_level: 5,
            level: 6,
            no_context_takeover,
        }
    }

    fn json(n: usize) -> Vec<u8> {
        (0..n)
            .map(|i| format!("{{\"id\":{i},\"price\":{}.5,\"side\":\"buy\"}},", i % 97))
            .collect::<String>()
            .into_bytes()
    }

    #[test]
    fn messages_round_trip_with_and_without_context_takeover() {
        for no_context_takeover in [false, true] {
            let mut compressor = Compressor::new(settings(15, no_context_takeover));
            let mut inflater = Inflater::new(15, no_context_takeover);
            let mut sizes = Vec::new();
            for message in [json(100), json(100), Vec::new(), b"x".to_vec(), json(5000)] {
                let compressed = compressor.compress(&message);
                assert!(!compressed.ends_with(&TAIL));
                sizes.push(compressed.len());
                assert_eq!(inflater.inflate(&compressed, 1 << 20).unwrap(), message);
            }
            // The same message again is nearly free only when the window is kept.
            assert_eq!(sizes[1] < sizes[0] / 4, !no_context_takeover, "{sizes:?}");
            assert_eq!(compressor.state.is_none(), no_context_takeover);
            assert_eq!(inflater.state.is_none(), no_context_takeover);
        }
    }

    #[test]
    fn the_empty_message_is_one_byte() {
        // RFC 7692 section 7.2.3.6.
        assert_eq!(Compressor::new(settings(15, true)).compress(b""), [0x00]);
        // Also after a message, when zlib has nothing to flush.
        let mut compressor = Compressor::new(settings(15, false));
        let mut inflater = Inflater::new(15, false);
        for message in [&b"hello"[..], b"", b"hello", b""] {
            let compressed = compressor.compress(message);
            assert!(!compressed.is_empty());
            assert_eq!(inflater.inflate(&compressed, 10).unwrap(), message);
        }
        assert_eq!(inflater.inflate(&[], 10).unwrap(), b"");
    }

    #[test]
    fn a_bomb_stops_at_the_limit() {
        let mut compressor = Compressor::new(settings(15, true));
        let bomb = compressor.compress(&vec![0u8; 64 << 20]);
        assert!(bomb.len() < 128 << 10, "{}", bomb.len());
        let mut inflater = Inflater::new(15, false);
        assert_eq!(inflater.inflate(&bomb, 1 << 20), Err(InflateError::TooBig(1 << 20)));
        assert!(inflater.state.is_none());
        // Exactly at the limit is fine.
        let exact = compressor.compress(&vec![7u8; 1 << 20]);
        assert_eq!(inflater.inflate(&exact, 1 << 20).unwrap().len(), 1 << 20);
    }

    #[test]
    fn garbage_is_invalid() {
        let mut inflater = Inflater::new(15, false);
        assert_eq!(inflater.inflate(&[0xff; 16], 1 << 20), Err(InflateError::Invalid));
        // The next message starts afresh.
        let message = Compressor::new(settings(15, true)).compress(b"hello");
        assert_eq!(inflater.inflate(&message, 100).unwrap(), b"hello");
    }
}
