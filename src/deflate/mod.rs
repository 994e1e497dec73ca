//! permessage-deflate (RFC 7692): the handshake (negotiate.rs), DEFLATE one message at a time on
//! zlib-rs (codec.rs), and a tokio-tungstenite connection that speaks it (stream.rs). framegate
//! frames with tokio-tungstenite, which has no extension support: compression happens at the
//! socket, so filters, sinks and sessions see plain messages only.

mod codec;
mod negotiate;
mod stream;

pub use codec::{Compressor, Settings};
pub use negotiate::{Agreed, AnswerError, NAME, accept, accepted, offer};
pub use stream::{Deflating, Marked, Options, compressed_limit};
