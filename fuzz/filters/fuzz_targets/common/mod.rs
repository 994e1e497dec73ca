//! What the filter targets share.

/// The `Hooks` of a filter crate.
macro_rules! hooks {
    ($krate:ident) => {
        common::filter::Hooks {
            init: $krate::fg_init,
            open: $krate::fg_on_open,
            message: $krate::fg_on_message,
            result: $krate::fg_on_result,
            timer: $krate::fg_on_timer,
            close: $krate::fg_on_close,
        }
    };
}

pub mod filter;
