//! The schema model: DataBrew's `stream_schema` (stream, columns with `databrewType`, `pk`,
//! `nullable`, nested `columns` for JSON types), parsed strictly: an unknown type is an error.

use serde::Deserialize;

/// A column type, as DataBrew (Blink) names them.
#[derive(Debug, Clone, PartialEq)]
pub enum Type {
    Boolean,
    Int16,
    Int32,
    Int64,
    Uint64,
    Float32,
    Float64,
    String,
    Uuid,
    Inet,
    Mac,
    Bytea,
    Date32,
    /// An object, checked against the nested columns when there are any.
    Json,
    ListJson,
    ListInt64,
    ListFloat64,
    ListString,
}

impl Type {
    /// Reads a `databrewType`; case and spaces do not matter (`List< JSON >`), anything unknown does.
    pub fn parse(name: &str) -> Result<Type, String> {
        let key: std::string::String = name.chars().filter(|c| !c.is_whitespace()).collect();
        let found = [
            ("boolean", Type::Boolean),
            ("int16", Type::Int16),
            ("int32", Type::Int32),
            ("int64", Type::Int64),
            ("uint64", Type::Uint64),
            ("float32", Type::Float32),
            ("float64", Type::Float64),
            ("string", Type::String),
            ("uuid", Type::Uuid),
            ("inet", Type::Inet),
            ("mac", Type::Mac),
            ("bytea", Type::Bytea),
            ("date32", Type::Date32),
            ("json", Type::Json),
            ("list<json>", Type::ListJson),
            ("list<int64>", Type::ListInt64),
            ("list<float64>", Type::ListFloat64),
            ("list<string>", Type::ListString),
        ]
        .into_iter()
        .find(|(known, _)| key.eq_ignore_ascii_case(known));
        match found {
            Some((_, t)) => Ok(t),
            None => Err(format!(
                "unknown databrewType {name:?}; expected one of Boolean, Int16, Int32, Int64, Uint64, Float32, \
                 Float64, String, UUID, Inet, MAC, bytea, Date32, JSON, List<JSON>, List<Int64>, List<Float64>, \
                 List<String>"
            )),
        }
    }

    /// The name used in reasons, as DataBrew writes it.
    pub fn name(&self) -> &'static str {
        match self {
            Type::Boolean => "Boolean",
            Type::Int16 => "Int16",
            Type::Int32 => "Int32",
            Type::Int64 => "Int64",
            Type::Uint64 => "Uint64",
            Type::Float32 => "Float32",
            Type::Float64 => "Float64",
            Type::String => "String",
            Type::Uuid => "UUID",
            Type::Inet => "Inet",
            Type::Mac => "MAC",
            Type::Bytea => "bytea",
            Type::Date32 => "Date32",
            Type::Json => "JSON",
            Type::ListJson => "List<JSON>",
            Type::ListInt64 => "List<Int64>",
            Type::ListFloat64 => "List<Float64>",
            Type::ListString => "List<String>",
        }
    }
}

#[derive(Debug, Clone)]
pub struct Column {
    pub name: String,
    pub kind: Type,
    pub pk: bool,
    pub nullable: bool,
    /// For `JSON` and `List<JSON>`: the columns of the nested objects (none: any object).
    pub columns: Vec<Column>,
}

#[derive(Debug, Clone)]
pub struct Stream {
    pub name: String,
    pub columns: Vec<Column>,
}

/// A column as written in DataBrew's YAML (or the same in TOML/JSON).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawColumn {
    name: String,
    #[serde(rename = "databrewType")]
    databrew_type: String,
    /// The source system's own type name; kept for the user, not checked.
    #[serde(rename = "nativeConnectorType", default)]
    _native_connector_type: Option<String>,
    #[serde(default)]
    pk: bool,
    #[serde(default = "yes")]
    nullable: bool,
    #[serde(default)]
    columns: Vec<RawColumn>,
}

fn yes() -> bool {
    true
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawStream {
    stream: String,
    columns: Vec<RawColumn>,
}

fn column(raw: RawColumn, path: &str) -> Result<Column, String> {
    let here = if path.is_empty() {
        raw.name.clone()
    } else {
        format!("{path}.{}", raw.name)
    };
    let kind = Type::parse(&raw.databrew_type).map_err(|e| format!("column {here}: {e}"))?;
    if !raw.columns.is_empty() && !matches!(kind, Type::Json | Type::ListJson) {
        return Err(format!(
            "column {here}: nested columns need type JSON or List<JSON>, not {}",
            kind.name()
        ));
    }
    let columns = raw
        .columns
        .into_iter()
        .map(|c| column(c, &here))
        .collect::<Result<_, _>>()?;
    Ok(Column {
        name: raw.name,
        kind,
        // A primary key is never null.
        nullable: raw.nullable && !raw.pk,
        pk: raw.pk,
        columns,
    })
}

impl RawStream {
    pub fn name(&self) -> &str {
        &self.stream
    }
}

impl Stream {
    pub fn from_raw(raw: RawStream) -> Result<Stream, String> {
        let columns: Vec<Column> = raw
            .columns
            .into_iter()
            .map(|c| column(c, ""))
            .collect::<Result<_, _>>()?;
        let mut names: Vec<&str> = columns.iter().map(|c| c.name.as_str()).collect();
        names.sort_unstable();
        if let Some(twice) = names.windows(2).find(|w| w[0] == w[1]) {
            return Err(format!("column {} is declared twice", twice[0]));
        }
        Ok(Stream {
            name: raw.stream,
            columns,
        })
    }
}
