//! NSDb's SELECT grammar (the subset docs/filters/query.md lists), parsed with nom into a
//! [`Select`]. Keywords are case-insensitive; names and quoted strings keep their case. A parse
//! error names the position (in characters from 0) and what was expected there.

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

/// A parse error: how much input was left where it happened, and what was expected there.
#[derive(Debug, PartialEq)]
pub struct Error<'a> {
    rest: &'a str,
    expected: &'static str,
}

impl<'a> ParseError<&'a str> for Error<'a> {
    fn from_error_kind(rest: &'a str, _: ErrorKind) -> Self {
        Error { rest, expected: "" }
    }

    fn append(_: &'a str, _: ErrorKind, other: Self) -> Self {
        other
    }

    /// The branch that got further explains the failure best; at a tie, one that says what it expected.
    fn or(self, other: Self) -> Self {
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
        if other.expected.is_empty() || other.rest.len() == input.len() {
            Error {
                rest: other.rest,
                expected,
            }
        } else {
            other
        }
    }
}

type Res<'a, T> = IResult<&'a str, T, Error<'a>>;

/// Parses a statement; `Err` is the reason a subscriber is told.
pub fn parse(text: &str) -> Result<Select, String> {
    let mut statement = all_consuming(delimited(
        multispace0,
        select,
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

fn name(input: &str) -> Res<'_, String> {
    context(
        "a name",
        preceded(
            multispace0,
            map(
                recognize((
                    take_while1(|c: char| c.is_ascii_alphabetic() || c == '_'),
                    take_while(word_char),
                )),
                str::to_string,
            ),
        ),
    )
    .parse(input)
}

fn select(input: &str) -> Res<'_, Select> {
    let (input, _) = context("select", keyword("select")).parse(input)?;
    let (input, distinct) = map(opt(kw("distinct")), |d| d.is_some()).parse(input)?;
    let (input, fields) = context(
        "'*', fields or aggregations",
        cut(alt((value(Vec::new(), sym("*")), separated_list1(sym(","), field)))),
    )
    .parse(input)?;
    let (input, _) = context("from", cut(kw("from"))).parse(input)?;
    let (input, metric) = context("a metric name", cut(name)).parse(input)?;
    let (input, condition) = opt(preceded(kw("where"), cut(expr))).parse(input)?;
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
    alt((
        preceded(
            kw("interval"),
            cut(map(
                (opt(preceded(multispace0, digit1)), preceded(multispace0, unit)),
                |(n, unit): (Option<&str>, i64)| {
                    GroupBy::Interval(n.and_then(|n| n.parse::<i64>().ok()).unwrap_or(1) * unit)
                },
            )),
        ),
        map(name, GroupBy::Dimension),
    ))
    .parse(input)
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

fn expr(input: &str) -> Res<'_, Expr> {
    let (input, first) = conjunction(input)?;
    let (input, rest) = many0(preceded(kw("or"), cut(conjunction))).parse(input)?;
    Ok((
        input,
        rest.into_iter().fold(first, |a, b| Expr::Or(Box::new(a), Box::new(b))),
    ))
}

fn conjunction(input: &str) -> Res<'_, Expr> {
    let (input, first) = negation(input)?;
    let (input, rest) = many0(preceded(kw("and"), cut(negation))).parse(input)?;
    Ok((
        input,
        rest.into_iter().fold(first, |a, b| Expr::And(Box::new(a), Box::new(b))),
    ))
}

fn negation(input: &str) -> Res<'_, Expr> {
    alt((
        map(preceded(kw("not"), cut(negation)), |e| Expr::Not(Box::new(e))),
        delimited(sym("("), cut(expr), context("')'", cut(sym(")")))),
        context("a condition", predicate),
    ))
    .parse(input)
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
    map(
        delimited(
            char('\''),
            take_while(|c| c != '\''),
            context("a closing quote", cut(char('\''))),
        ),
        str::to_string,
    )
    .parse(input)
}

fn pattern(input: &str) -> Res<'_, String> {
    context(
        "a pattern",
        preceded(multispace0, alt((quoted, map(take_while1(bare_char), str::to_string)))),
    )
    .parse(input)
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
            alt((
                now,
                number,
                map(quoted, Term::Text),
                map(take_while1(bare_char), |s: &str| Term::Text(s.to_string())),
            )),
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
