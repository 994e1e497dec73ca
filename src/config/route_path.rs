//! Route path templates: literal segments and `{name}` captures, matched segment by segment.

/// A parsed path template such as `/ws-ingest/{ingestor}`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RoutePath {
    segments: Vec<Segment>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Segment {
    Literal(String),
    Capture(String),
}

impl RoutePath {
    pub fn parse(template: &str) -> Result<RoutePath, String> {
        let rest = template
            .strip_prefix('/')
            .ok_or_else(|| format!("expected a path starting with '/', got {template:?}"))?;
        let mut segments = Vec::new();
        let mut names = Vec::new();
        for part in rest.split('/').filter(|p| !p.is_empty()) {
            if let Some(name) = part.strip_prefix('{').and_then(|p| p.strip_suffix('}')) {
                if !crate::config::is_module_name(name) {
                    return Err(format!(
                        "a capture needs a name of letters, digits, '_' and '-', got {part:?}"
                    ));
                }
                if names.contains(&name) {
                    return Err(format!("the capture {{{name}}} appears twice"));
                }
                names.push(name);
                segments.push(Segment::Capture(name.to_string()));
            } else if part.contains(['{', '}']) {
                return Err(format!("a capture must be a whole segment, got {part:?}"));
            } else {
                segments.push(Segment::Literal(part.to_string()));
            }
        }
        Ok(RoutePath { segments })
    }

    /// The template with capture names erased: two routes of one shape would be ambiguous.
    pub fn shape(&self) -> String {
        self.segments
            .iter()
            .map(|s| match s {
                Segment::Literal(l) => l.as_str(),
                Segment::Capture(_) => "{}",
            })
            .collect::<Vec<_>>()
            .join("/")
    }

    /// Literal segments count: a more literal route wins over a capturing one.
    pub fn specificity(&self) -> usize {
        self.segments
            .iter()
            .filter(|s| matches!(s, Segment::Literal(_)))
            .count()
    }

    /// The captures, when `path` (without query) matches.
    pub fn matches(&self, path: &str) -> Option<Vec<(String, String)>> {
        let parts: Vec<&str> = path.split('/').filter(|p| !p.is_empty()).collect();
        if parts.len() != self.segments.len() {
            return None;
        }
        let mut captures = Vec::new();
        for (segment, part) in self.segments.iter().zip(parts) {
            match segment {
                Segment::Literal(l) if l == part => {}
                Segment::Literal(_) => return None,
                Segment::Capture(name) => captures.push((name.clone(), percent_decode(part))),
            }
        }
        Some(captures)
    }
}

/// Decodes `%XX` escapes (and `+` when `plus_is_space`); invalid escapes stay as they are.
pub fn percent_decode_with(input: &str, plus_is_space: bool) -> String {
    let bytes = input.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = |b: u8| (b as char).to_digit(16);
        match bytes[i] {
            b'%' if i + 2 < bytes.len() => match (hex(bytes[i + 1]), hex(bytes[i + 2])) {
                (Some(h), Some(l)) => {
                    out.push((h * 16 + l) as u8);
                    i += 3;
                    continue;
                }
                _ => out.push(b'%'),
            },
            b'+' if plus_is_space => out.push(b' '),
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn percent_decode(segment: &str) -> String {
    percent_decode_with(segment, false)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn captures_and_literals() {
        let p = RoutePath::parse("/ws-ingest/{ingestor}").unwrap();
        assert_eq!(
            p.matches("/ws-ingest/kafka%20x"),
            Some(vec![("ingestor".into(), "kafka x".into())])
        );
        assert_eq!(p.matches("/ws-ingest"), None);
        assert_eq!(p.matches("/other/x"), None);
        assert_eq!(p.specificity(), 1);
        assert_eq!(RoutePath::parse("/").unwrap().matches("/"), Some(vec![]));
    }

    #[test]
    fn bad_templates() {
        assert!(RoutePath::parse("/a/x{b}").is_err());
        assert!(RoutePath::parse("/{a}/{a}").is_err());
        assert!(RoutePath::parse("/{}").is_err());
    }

    #[test]
    fn decoding() {
        assert_eq!(percent_decode_with("a+b%2Fc%zz%4", true), "a b/c%zz%4");
    }
}
