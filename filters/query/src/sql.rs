//! NSDb's SELECT grammar (the subset docs/filters/query.md lists), parsed with nom into a
//! [`Select`]. Keywords are case-insensitive; names and quoted strings keep their case. A parse
//! error names the position (in characters from 0) and what was expected there.
//!
//! A query is bounded before it can cost much ([`Limit`]): its length, how deep parentheses and
//! `not`s nest, how many conditions and fields it has, the length of each name and value, and
//! the `group by interval`. The parser recurses once per nesting level and the trees it builds
//! are at most `MAX_CONDITIONS` deep, so neither parsing nor evaluating (both recursive) can run
//! out of the guest's stack; a query past a limit gets a reason, like any other bad query.

use std::cell::Cell;

use nom::branch::alt;
use nom::bytes::complete::{tag, tag_no_case, take_while, take_while1};
use nom::character::complete::{char, digit1, multispace0};
use nom::combinator::{all_consuming, cut, map, map_opt, not, opt, peek, recognize, value};
use nom::error::{ContextError, ErrorKind, ParseError, context};
use nom::multi::{many0, separated_list1};
use nom::sequence::{delimited, preceded, terminated};
use nom::{IResult, Parser};

/// A parsed `select`.
#[derive(Debug, Clone, PartialEq)]
pub struct Select {
    pub distinct: bool,
    /// Empty for `*`.
    pub fields: Vec<Field>,
    pub metric: String,
    pub condition: Option<Expr>,
    pub group_by: Option<GroupBy>,
    /// The name to order by, and whether descending.
    pub order_by: Option<(String, bool)>,
    pub limit: Option<usize>,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Field {
    Name(String),
    Aggregate(Aggregate, Arg),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Aggregate {
    Count,
    CountDistinct,
    Sum,
    Min,
    Max,
    Avg,
    First,
    Last,
}

/// What an aggregation reads: `*` (the record's value, or the record itself for `count`) or a name.
#[derive(Debug, Clone, PartialEq)]
pub enum Arg {
    Star,
    Name(String),
}

#[derive(Debug, Clone, PartialEq)]
pub enum GroupBy {
    Dimension(String),
    /// Buckets of this many milliseconds.
    Interval(i64),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    Eq,
    Gt,
    Ge,
    Lt,
    Le,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Expr {
    And(Box<Expr>, Box<Expr>),
    Or(Box<Expr>, Box<Expr>),
    Not(Box<Expr>),
    Compare(String, Op, Term),
    /// `$` is the wildcard.
    Like(String, String),
    /// `in (lo, hi)`: a range, both ends included.
    Range(String, Term, Term),
    /// `is null` (true) or `is not null` (false).
    Null(String, bool),
}

#[derive(Debug, Clone, PartialEq)]
pub enum Term {
    Int(i64),
    Float(f64),
    Text(String),
    /// `now`, plus this many milliseconds (negative for `now - 2h`).
    Now(i64),
}

/// The longest query string, in bytes.
pub const MAX_QUERY_BYTES: usize = 8192;
/// How deep parentheses and `not`s may nest in a condition.
pub const MAX_DEPTH: usize = 32;
/// Conditions (comparisons, `like`, `in`, `is null`) in a query, `filters` included.
pub const MAX_CONDITIONS: usize = 256;
/// Fields and aggregations after `select`.
pub const MAX_FIELDS: usize = 64;
/// The longest name (a metric, a dimension, a field), in bytes.
pub const MAX_NAME: usize = 256;
/// The longest value or `like` pattern, in bytes.
pub const MAX_TEXT: usize = 1024;
/// The longest `group by interval`: ten years, in milliseconds.
pub const MAX_INTERVAL_MS: i64 = 3650 * 86_400_000;

/// A bound a query passed; its text is the reason a subscriber is told.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Limit {
    Depth,
    Conditions,
    Fields,
    Name,
    Text,
    Interval,
}

impl std::fmt::Display for Limit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Limit::Depth => write!(f, "parentheses and nots nest more than {MAX_DEPTH} deep"),
            Limit::Conditions => write!(f, "more than {MAX_CONDITIONS} conditions"),
            Limit::Fields => write!(f, "more than {MAX_FIELDS} fields"),
            Limit::Name => write!(f, "a name longer than {MAX_NAME} bytes"),
            Limit::Text => write!(f, "a value longer than {MAX_TEXT} bytes"),
            Limit::Interval => write!(
                f,
                "group by interval must be from 1 ms to {} days",
                MAX_INTERVAL_MS / 86_400_000
            ),
        }
    }
}

/// A parse error: how much input was left where it happened, and what was expected there, or
/// the limit the query passed there.
#[derive(Debug, PartialEq)]
pub struct Error<'a> {
    rest: &'a str,
    expected: &'static str,
    limit: Option<Limit>,
}

impl<'a> Error<'a> {
    /// A failure no other branch may explain better: a limit passed at `rest`.
    fn limit(rest: &'a str, limit: Limit) -> nom::Err<Self> {
        nom::Err::Failure(Error {
            rest,
            expected: "",
            limit: Some(limit),
        })
    }
}

impl<'a> ParseError<&'a str> for Error<'a> {
    fn from_error_kind(rest: &'a str, _: ErrorKind) -> Self {
        Error {
            rest,
            expected: "",
            limit: None,
        }
    }

    fn append(_: &'a str, _: ErrorKind, other: Self) -> Self {
        other
    }

    /// A passed limit explains the failure; else the branch that got further does; at a tie,
    /// one that says what it expected.
    fn or(self, other: Self) -> Self {
        if self.limit.is_some() {
            return self;
        }
        if other.limit.is_some() {
            return other;
        }
        match other.rest.len().cmp(&self.rest.len()) {
            std::cmp::Ordering::Less => other,
            std::cmp::Ordering::Greater => self,
            std::cmp::Ordering::Equal if self.expected.is_empty() => other,
            std::cmp::Ordering::Equal => self,
        }
    }
}

impl<'a> ContextError<&'a str> for Error<'a> {
    fn add_context(input: &'a str, expected: &'static str, other: Self) -> Self {
        if other.limit.is_none() && (other.expected.is_empty() || other.rest.len() == input.len()) {
            Error {
                rest: other.rest,
                expected,
                limit: None,
            }
        } else {
            other
        }
    }
}

type Res<'a, T> = IResult<&'a str, T, Error<'a>>;

/// Parses a statement; `Err` is the reason a subscriber is told.
pub fn parse(text: &str) -> Result<Select, String> {
    if text.len() > MAX_QUERY_BYTES {
        return Err(format!("the query is longer than {MAX_QUERY_BYTES} bytes"));
    }
    let conditions = Cell::new(0);
    let mut statement = all_consuming(delimited(
        multispace0,
        |input| select(input, &conditions),
        (multispace0, opt(char(';')), multispace0),
    ));
    match statement.parse(text) {
        Ok((_, select)) => Ok(select),
        Err(nom::Err::Error(e) | nom::Err::Failure(e)) => {
            let other = (
                multispace0::<&str, Error<'_>>,
                alt((keyword("insert"), keyword("delete"), keyword("drop"))),
            );
            if preceded(other.0, other.1).parse(text).is_ok() {
                return Err("not a select statement".into());
            }
            let rest = e.rest.trim_start();
            let at = text[..text.len() - rest.len()].chars().count();
            if let Some(limit) = e.limit {
                return Err(format!("{limit} (at position {at})"));
            }
            let found = match rest.chars().take(12).collect::<String>() {
                s if s.is_empty() => "the end of the query".to_string(),
                s => format!("'{s}'"),
            };
            let expected = if e.expected.is_empty() {
                "the end of the query"
            } else {
                e.expected
            };
            Err(format!(
                "parse error at position {at}: expected {expected}, found {found}"
            ))
        }
        Err(nom::Err::Incomplete(_)) => Err("incomplete query".into()),
    }
}

fn word_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '_'
}

/// A keyword, case-insensitive, not the start of a longer name.
fn keyword<'a>(word: &'static str) -> impl Parser<&'a str, Output = &'a str, Error = Error<'a>> {
    terminated(tag_no_case(word), not(peek(take_while1(word_char))))
}

/// A keyword with the spaces before it.
fn kw<'a>(word: &'static str) -> impl Parser<&'a str, Output = &'a str, Error = Error<'a>> {
    preceded(multispace0, keyword(word))
}

/// A symbol with the spaces before it.
fn sym<'a>(symbol: &'static str) -> impl Parser<&'a str, Output = &'a str, Error = Error<'a>> {
    preceded(multispace0, tag(symbol))
}

/// `text` as an owned string, or a failure at `at` when it is longer than `max` bytes.
fn bounded<'a>(at: &'a str, text: &str, max: usize, limit: Limit) -> Result<String, nom::Err<Error<'a>>> {
    if text.len() > max {
        return Err(Error::limit(at, limit));
    }
    Ok(text.to_string())
}

fn name(input: &str) -> Res<'_, String> {
    let (start, _) = multispace0(input)?;
    let (rest, found) = context(
        "a name",
        recognize((
            take_while1(|c: char| c.is_ascii_alphabetic() || c == '_'),
            take_while(word_char),
        )),
    )
    .parse(start)?;
    Ok((rest, bounded(start, found, MAX_NAME, Limit::Name)?))
}

fn select<'a>(input: &'a str, conditions: &Cell<usize>) -> Res<'a, Select> {
    let (input, _) = context("select", keyword("select")).parse(input)?;
    let (input, distinct) = map(opt(kw("distinct")), |d| d.is_some()).parse(input)?;
    let (input, fields) = context(
        "'*', fields or aggregations",
        cut(alt((value(Vec::new(), sym("*")), separated_list1(sym(","), field)))),
    )
    .parse(input)?;
    if fields.len() > MAX_FIELDS {
        return Err(Error::limit(input, Limit::Fields));
    }
    let (input, _) = context("from", cut(kw("from"))).parse(input)?;
    let (input, metric) = context("a metric name", cut(name)).parse(input)?;
    let (input, condition) = opt(preceded(kw("where"), cut(|i| expr(i, 0, conditions)))).parse(input)?;
    let (input, group_by) = opt(preceded((kw("group"), cut(kw("by"))), cut(group_by))).parse(input)?;
    let (input, order_by) = opt(preceded(
        (kw("order"), cut(kw("by"))),
        cut((
            name,
            map(opt(alt((kw("desc"), kw("asc")))), |d| {
                d.is_some_and(|d| d.eq_ignore_ascii_case("desc"))
            }),
        )),
    ))
    .parse(input)?;
    let (input, limit) = opt(preceded(
        kw("limit"),
        context(
            "a number of records",
            cut(map_opt(preceded(multispace0, digit1), |d: &str| d.parse().ok())),
        ),
    ))
    .parse(input)?;
    Ok((
        input,
        Select {
            distinct,
            fields,
            metric,
            condition,
            group_by,
            order_by,
            limit,
        },
    ))
}

fn aggregate(input: &str) -> Res<'_, Aggregate> {
    alt((
        value(Aggregate::Count, kw("count")),
        value(Aggregate::Sum, kw("sum")),
        value(Aggregate::Min, kw("min")),
        value(Aggregate::Max, kw("max")),
        value(Aggregate::Avg, kw("avg")),
        value(Aggregate::First, kw("first")),
        value(Aggregate::Last, kw("last")),
    ))
    .parse(input)
}

fn field(input: &str) -> Res<'_, Field> {
    let arg = alt((value(Arg::Star, sym("*")), map(name, Arg::Name)));
    let call = (
        terminated(aggregate, sym("(")),
        cut(terminated(
            (opt(kw("distinct")), context("'*' or a name", arg)),
            context("')'", sym(")")),
        )),
    );
    alt((
        map_opt(call, |(aggregate, (distinct, arg))| match (aggregate, distinct) {
            (_, None) => Some(Field::Aggregate(aggregate, arg)),
            (Aggregate::Count, Some(_)) => Some(Field::Aggregate(Aggregate::CountDistinct, arg)),
            _ => None,
        }),
        map(name, Field::Name),
    ))
    .parse(input)
}

fn group_by(input: &str) -> Res<'_, GroupBy> {
    alt((preceded(kw("interval"), cut(interval)), map(name, GroupBy::Dimension))).parse(input)
}

/// `[N] UNIT`, from 1 ms to `MAX_INTERVAL_MS` (0 would divide by zero, and a bucket's bounds
/// must not overflow).
fn interval(input: &str) -> Res<'_, GroupBy> {
    let (start, _) = multispace0(input)?;
    let (rest, (n, unit)) = (opt(digit1), preceded(multispace0, unit)).parse(start)?;
    let ms = match n {
        None => Some(unit),
        Some(n) => n.parse::<i64>().ok().and_then(|n| n.checked_mul(unit)),
    };
    match ms {
        Some(ms) if (1..=MAX_INTERVAL_MS).contains(&ms) => Ok((rest, GroupBy::Interval(ms))),
        _ => Err(Error::limit(start, Limit::Interval)),
    }
}

/// A time unit, in milliseconds.
fn unit(input: &str) -> Res<'_, i64> {
    context(
        "a time unit (d, h, min, s, ms)",
        alt((
            value(86_400_000, alt((keyword("days"), keyword("day"), keyword("d")))),
            value(3_600_000, alt((keyword("hours"), keyword("hour"), keyword("h")))),
            value(
                60_000,
                alt((
                    keyword("minutes"),
                    keyword("minute"),
                    keyword("mins"),
                    keyword("min"),
                    keyword("m"),
                )),
            ),
            value(
                1_000,
                alt((
                    keyword("seconds"),
                    keyword("second"),
                    keyword("secs"),
                    keyword("sec"),
                    keyword("s"),
                )),
            ),
            value(1, alt((keyword("milliseconds"), keyword("millisecond"), keyword("ms")))),
        )),
    )
    .parse(input)
}

fn expr<'a>(input: &'a str, depth: usize, conditions: &Cell<usize>) -> Res<'a, Expr> {
    let (input, first) = conjunction(input, depth, conditions)?;
    let (input, rest) = many0(preceded(kw("or"), cut(|i| conjunction(i, depth, conditions)))).parse(input)?;
    Ok((
        input,
        rest.into_iter().fold(first, |a, b| Expr::Or(Box::new(a), Box::new(b))),
    ))
}

fn conjunction<'a>(input: &'a str, depth: usize, conditions: &Cell<usize>) -> Res<'a, Expr> {
    let (input, first) = negation(input, depth, conditions)?;
    let (input, rest) = many0(preceded(kw("and"), cut(|i| negation(i, depth, conditions)))).parse(input)?;
    Ok((
        input,
        rest.into_iter().fold(first, |a, b| Expr::And(Box::new(a), Box::new(b))),
    ))
}

/// `not X`, `(X)` or a condition; each `not` and `(` is a level deeper.
fn negation<'a>(input: &'a str, depth: usize, conditions: &Cell<usize>) -> Res<'a, Expr> {
    let deeper = |input: &'a str| -> Res<'a, &'a str> {
        let (rest, found) = alt((kw("not"), sym("("))).parse(input)?;
        if depth >= MAX_DEPTH {
            return Err(Error::limit(input.trim_start(), Limit::Depth));
        }
        Ok((rest, found))
    };
    let (rest, opened) = opt(deeper).parse(input)?;
    match opened {
        Some("(") => terminated(cut(|i| expr(i, depth + 1, conditions)), context("')'", cut(sym(")")))).parse(rest),
        Some(_) => map(cut(|i| negation(i, depth + 1, conditions)), |e| Expr::Not(Box::new(e))).parse(rest),
        None => {
            let (rest, found) = context("a condition", predicate).parse(input)?;
            conditions.set(conditions.get() + 1);
            if conditions.get() > MAX_CONDITIONS {
                return Err(Error::limit(input.trim_start(), Limit::Conditions));
            }
            Ok((rest, found))
        }
    }
}

fn predicate(input: &str) -> Res<'_, Expr> {
    let (input, dim) = name(input)?;
    let (input, expr) = context(
        "an operator (=, >, >=, <, <=, like, in, is)",
        cut(alt((
            map(preceded((kw("is"), kw("not")), cut(kw("null"))), |_| {
                Expr::Null(dim.clone(), false)
            }),
            map(preceded(kw("is"), cut(kw("null"))), |_| Expr::Null(dim.clone(), true)),
            map(preceded(kw("like"), cut(pattern)), |p| Expr::Like(dim.clone(), p)),
            map(
                preceded(
                    (kw("in"), context("'('", cut(sym("(")))),
                    cut((term, preceded(context("','", sym(",")), term), context("')'", sym(")")))),
                ),
                |(lo, hi, _)| Expr::Range(dim.clone(), lo, hi),
            ),
            map((operator, cut(term)), |(op, t)| Expr::Compare(dim.clone(), op, t)),
        ))),
    )
    .parse(input)?;
    Ok((input, expr))
}

fn operator(input: &str) -> Res<'_, Op> {
    preceded(
        multispace0,
        alt((
            value(Op::Ge, tag(">=")),
            value(Op::Le, tag("<=")),
            value(Op::Gt, tag(">")),
            value(Op::Lt, tag("<")),
            value(Op::Eq, tag("=")),
        )),
    )
    .parse(input)
}

/// Characters of an unquoted value or `like` pattern.
fn bare_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || "_-$.:~!?".contains(c)
}

fn quoted(input: &str) -> Res<'_, String> {
    let (rest, text) = delimited(
        char('\''),
        take_while(|c| c != '\''),
        context("a closing quote", cut(char('\''))),
    )
    .parse(input)?;
    Ok((rest, bounded(input, text, MAX_TEXT, Limit::Text)?))
}

/// A bare word: letters, digits and `_-$.:~!?`.
fn bare(input: &str) -> Res<'_, String> {
    let (rest, text) = take_while1(bare_char).parse(input)?;
    Ok((rest, bounded(input, text, MAX_TEXT, Limit::Text)?))
}

fn pattern(input: &str) -> Res<'_, String> {
    context("a pattern", preceded(multispace0, alt((quoted, bare)))).parse(input)
}

fn number(input: &str) -> Res<'_, Term> {
    let digits = recognize((opt(char('-')), digit1, opt((char('.'), digit1))));
    map_opt(terminated(digits, not(peek(take_while1(bare_char)))), |n: &str| {
        if n.contains('.') {
            n.parse().ok().map(Term::Float)
        } else {
            n.parse().ok().map(Term::Int)
        }
    })
    .parse(input)
}

fn now(input: &str) -> Res<'_, Term> {
    let offset = (
        preceded(multispace0, alt((char('+'), char('-')))),
        cut((
            context("a number", preceded(multispace0, digit1)),
            preceded(multispace0, unit),
        )),
    );
    map_opt(preceded(keyword("now"), opt(offset)), |offset| match offset {
        None => Some(Term::Now(0)),
        Some((sign, (n, unit))) => {
            let ms = n.parse::<i64>().ok()?.checked_mul(unit)?;
            Some(Term::Now(if sign == '-' { -ms } else { ms }))
        }
    })
    .parse(input)
}

fn term(input: &str) -> Res<'_, Term> {
    context(
        "a value (a number, a word, a 'quoted string' or now)",
        preceded(
            multispace0,
            alt((now, number, map(quoted, Term::Text), map(bare, Term::Text))),
        ),
    )
    .parse(input)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cmp(dim: &str, op: Op, term: Term) -> Expr {
        Expr::Compare(dim.into(), op, term)
    }

    #[test]
    fn select_star_with_limit() {
        let s = parse("select * from metric limit 1").unwrap();
        assert_eq!(s.metric, "metric");
        assert!(s.fields.is_empty());
        assert_eq!(s.limit, Some(1));
        assert_eq!(parse("SELECT * FROM people LIMIT 100;").unwrap().limit, Some(100));
    }

    #[test]
    fn where_precedence_and_forms() {
        let s = parse("select * from m where a = 1 or b > 2.5 and not c like 'x$' ").unwrap();
        let and = Expr::And(
            Box::new(cmp("b", Op::Gt, Term::Float(2.5))),
            Box::new(Expr::Not(Box::new(Expr::Like("c".into(), "x$".into())))),
        );
        assert_eq!(
            s.condition.unwrap(),
            Expr::Or(Box::new(cmp("a", Op::Eq, Term::Int(1))), Box::new(and))
        );
        let s =
            parse("select * from m where (a = x or a = y) and timestamp in (10, 20) and d is not null and e is null")
                .unwrap();
        let text = format!("{:?}", s.condition.unwrap());
        assert!(text.contains("Range(\"timestamp\", Int(10), Int(20))"), "{text}");
        assert!(
            text.contains("Null(\"d\", false)") && text.contains("Null(\"e\", true)"),
            "{text}"
        );
        assert!(text.contains("Text(\"x\")"), "{text}");
        let s = parse("select * from m where timestamp > now - 2h and timestamp < now + 30 min").unwrap();
        assert_eq!(
            s.condition.unwrap(),
            Expr::And(
                Box::new(cmp("timestamp", Op::Gt, Term::Now(-7_200_000))),
                Box::new(cmp("timestamp", Op::Lt, Term::Now(1_800_000)))
            )
        );
        let s = parse("select * from m where host = 10.0.0.1 and v >= -3 and w <= -0.5").unwrap();
        let text = format!("{:?}", s.condition.unwrap());
        assert!(
            text.contains("Text(\"10.0.0.1\")") && text.contains("Int(-3)") && text.contains("Float(-0.5)"),
            "{text}"
        );
    }

    #[test]
    fn aggregations_group_order() {
        let s = parse(
            "select count(*), sum(value), count(distinct city) from m group by country order by value desc limit 3",
        )
        .unwrap();
        assert_eq!(
            s.fields,
            vec![
                Field::Aggregate(Aggregate::Count, Arg::Star),
                Field::Aggregate(Aggregate::Sum, Arg::Name("value".into())),
                Field::Aggregate(Aggregate::CountDistinct, Arg::Name("city".into())),
            ]
        );
        assert_eq!(s.group_by, Some(GroupBy::Dimension("country".into())));
        assert_eq!(s.order_by, Some(("value".into(), true)));
        assert_eq!(
            parse("select avg(value) from m group by interval 5 min")
                .unwrap()
                .group_by,
            Some(GroupBy::Interval(300_000))
        );
        assert_eq!(
            parse("select max(value) from m group by interval s").unwrap().group_by,
            Some(GroupBy::Interval(1_000))
        );
        let s = parse("select distinct city, value from m order by city").unwrap();
        assert!(s.distinct);
        assert_eq!(s.order_by, Some(("city".into(), false)));
        // `order` is not `or`, `limits` is not `limit`.
        assert!(parse("select * from m where a = 1 order by a").is_ok());
    }

    /// A condition `depth` levels deep: parentheses and nots alternating.
    fn nested(depth: usize) -> String {
        let open: String = (0..depth).map(|i| if i % 2 == 0 { "(" } else { "not " }).collect();
        let close = ")".repeat(depth.div_ceil(2));
        format!("select * from m where {open}a = 1{close}")
    }

    #[test]
    fn limits_are_reasons_not_traps() {
        assert!(parse(&nested(MAX_DEPTH)).is_ok());
        assert_eq!(
            parse(&nested(MAX_DEPTH + 1)).unwrap_err(),
            "parentheses and nots nest more than 32 deep (at position 102)"
        );
        let parens = format!("select * from m where {}a = 1{}", "(".repeat(1000), ")".repeat(1000));
        assert_eq!(
            parse(&parens).unwrap_err(),
            "parentheses and nots nest more than 32 deep (at position 54)"
        );
        let nots = format!("select * from m where {}a = 1", "not ".repeat(10_000));
        assert_eq!(parse(&nots).unwrap_err(), "the query is longer than 8192 bytes");
        let nots = format!("select * from m where {}a = 1", "not ".repeat(1_000));
        assert_eq!(
            parse(&nots).unwrap_err(),
            "parentheses and nots nest more than 32 deep (at position 150)"
        );
        let many = |n: usize| format!("select * from m where {}", vec!["a=1"; n].join(" or "));
        let tree = parse(&many(MAX_CONDITIONS)).unwrap().condition.unwrap();
        assert!(matches!(tree, Expr::Or(..)));
        assert_eq!(
            parse(&many(MAX_CONDITIONS + 1)).unwrap_err(),
            "more than 256 conditions (at position 1814)"
        );
        let fields = |n: usize| format!("select {} from m", vec!["a"; n].join(","));
        assert!(parse(&fields(MAX_FIELDS)).is_ok());
        assert_eq!(
            parse(&fields(MAX_FIELDS + 1)).unwrap_err(),
            "more than 64 fields (at position 137)"
        );
        let name = "n".repeat(MAX_NAME + 1);
        assert_eq!(
            parse(&format!("select * from m where {name} = 1")).unwrap_err(),
            "a name longer than 256 bytes (at position 22)"
        );
        let text = "t".repeat(MAX_TEXT + 1);
        for query in [
            format!("select * from m where a = '{text}'"),
            format!("select * from m where a like {text}"),
        ] {
            assert!(
                parse(&query).unwrap_err().starts_with("a value longer than 1024 bytes"),
                "{query}"
            );
        }
        assert!(parse(&format!("select * from m where a = {}", &text[1..])).is_ok());
    }

    #[test]
    fn group_by_interval_is_from_a_millisecond_to_ten_years() {
        let interval = |spec: &str| parse(&format!("select count(*) from m group by interval {spec}"));
        assert_eq!(interval("1 ms").unwrap().group_by, Some(GroupBy::Interval(1)));
        assert_eq!(
            interval("3650 d").unwrap().group_by,
            Some(GroupBy::Interval(MAX_INTERVAL_MS))
        );
        for bad in [
            "0 s",
            "0 ms",
            "3651 d",
            "99999999999999999999 s",
            "9223372036854775807 d",
        ] {
            assert_eq!(
                interval(bad).unwrap_err(),
                "group by interval must be from 1 ms to 3650 days (at position 41)",
                "{bad}"
            );
        }
        assert_eq!(
            interval("-5 s").unwrap_err(),
            "parse error at position 41: expected a time unit (d, h, min, s, ms), found '-5 s'"
        );
    }

    #[test]
    fn errors_name_the_position_and_what_was_expected() {
        assert_eq!(parse("insert into m val = 1").unwrap_err(), "not a select statement");
        assert_eq!(
            parse("DELETE from m where a = 1").unwrap_err(),
            "not a select statement"
        );
        assert_eq!(
            parse("select * from m where a == 1").unwrap_err(),
            "parse error at position 25: expected a value (a number, a word, a 'quoted string' or now), found '= 1'"
        );
        assert_eq!(
            parse("select * frm m").unwrap_err(),
            "parse error at position 9: expected from, found 'frm m'"
        );
        assert_eq!(
            parse("select * from m where").unwrap_err(),
            "parse error at position 21: expected a condition, found the end of the query"
        );
        assert_eq!(
            parse("select * from m limit x").unwrap_err(),
            "parse error at position 22: expected a number of records, found 'x'"
        );
        assert_eq!(
            parse("select * from m where a in (1 2)").unwrap_err(),
            "parse error at position 30: expected ',', found '2)'"
        );
        assert!(
            parse("select sum(distinct v) from m")
                .unwrap_err()
                .starts_with("parse error at position")
        );
        assert_eq!(
            parse("select * from m garbage").unwrap_err(),
            "parse error at position 16: expected the end of the query, found 'garbage'"
        );
    }
}
