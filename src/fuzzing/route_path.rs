//! Route path templates (src/config/route_path.rs): a template as the config gives it, then a
//! request path matched against it (and percent-decoding, which the captures and query
//! parameters go through). The input is `TEMPLATE\nPATH`. Nothing panics, a template that
//! parses has a shape, and a literal template matches itself.

use crate::config::{RoutePath, percent_decode_with};

/// One input: panics on what must not happen.
pub fn check(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let (template, path) = text.split_once('\n').unwrap_or((text, ""));
    let _ = percent_decode_with(path, true);
    let Ok(route) = RoutePath::parse(template) else {
        return;
    };
    let _ = (route.shape(), route.specificity());
    let _ = route.matches(path);
    if !template.contains('{') {
        assert!(route.matches(template).is_some(), "{template:?} does not match itself");
    }
}
