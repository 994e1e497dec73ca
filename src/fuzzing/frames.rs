//! The frame relay's scanner (src/server/relay/frames.rs): frame headers read as bytes arrive
//! in pieces of any size. Whatever the bytes, what passes is never more than what came, and the
//! pieces give the same outcome as the whole (bytes passed and the close called for).

use crate::server::fuzzing::Frames;

/// Bytes passed and the close, scanning `data` in pieces of the given sizes (0 ends a piece
/// list: the rest in one), keeping an incomplete header for the next piece as the relay does.
fn scan(data: &[u8], sizes: &[u8], from_client: bool, deflate: bool) -> (usize, Option<(u16, &'static str)>) {
    let mut frames = Frames::new(from_client, 4096, deflate);
    let (mut passed, mut held) = (0, 0);
    let mut pieces = sizes.iter().map(|s| usize::from(*s)).take_while(|s| *s > 0);
    while held < data.len() {
        let end = pieces.next().map_or(data.len(), |size| (held + size).min(data.len()));
        held = end;
        let (n, close) = frames.scan(&data[passed..end]);
        assert!(n <= end - passed, "passed more than it was given");
        passed += n;
        if close.is_some() {
            return (passed, close);
        }
    }
    (passed, None)
}

/// One input: panics on what must not happen.
pub fn check(data: &[u8]) {
    let [flags, count, rest @ ..] = data else {
        return;
    };
    let (sizes, data) = rest.split_at(usize::from(*count).min(rest.len()));
    let (from_client, deflate) = (flags & 1 != 0, flags & 2 != 0);
    let whole = scan(data, &[], from_client, deflate);
    assert_eq!(
        scan(data, sizes, from_client, deflate),
        whole,
        "pieces and the whole disagree"
    );
}
