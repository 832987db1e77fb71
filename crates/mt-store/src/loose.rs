//! Lenient decoding of columns that legacy rows may fill with an unexpected storage class.
//!
//! SQLite is dynamically typed: the original suite could store `''` in an INTEGER column or an
//! epoch number in a DATETIME one. Readers must show such rows as they are instead of failing
//! the whole query, so row structs decode those columns through these wrappers
//! (`#[sqlx(try_from = "LooseText")]`).

use sqlx::decode::Decode;
use sqlx::error::BoxDynError;
use sqlx::sqlite::{Sqlite, SqliteTypeInfo, SqliteValueRef};
use sqlx::{TypeInfo, ValueRef};

/// Any value, read as text (numbers formatted, blobs as lossy UTF-8).
pub(crate) struct LooseText(Option<String>);
/// An integer; numeric text is parsed, anything else reads as `None`.
pub(crate) struct LooseInt(Option<i64>);
/// A real number; numeric text is parsed, anything else reads as `None`.
pub(crate) struct LooseReal(Option<f64>);
/// A boolean stored as 0/1 (or legacy text such as `"true"`).
pub(crate) struct LooseBool(bool);

enum Raw {
    Null,
    Int(i64),
    Real(f64),
    Text(String),
}

fn raw(value: SqliteValueRef<'_>) -> Result<Raw, BoxDynError> {
    if value.is_null() {
        return Ok(Raw::Null);
    }
    let kind = value.type_info().name().to_owned();
    Ok(match kind.as_str() {
        "INTEGER" => Raw::Int(<i64 as Decode<Sqlite>>::decode(value)?),
        "REAL" => Raw::Real(<f64 as Decode<Sqlite>>::decode(value)?),
        "BLOB" => Raw::Text(
            String::from_utf8_lossy(&<Vec<u8> as Decode<Sqlite>>::decode(value)?).into_owned(),
        ),
        _ => Raw::Text(<String as Decode<Sqlite>>::decode(value)?),
    })
}

macro_rules! loose_type {
    ($t:ty) => {
        impl sqlx::Type<Sqlite> for $t {
            fn type_info() -> SqliteTypeInfo {
                <String as sqlx::Type<Sqlite>>::type_info()
            }
            fn compatible(_: &SqliteTypeInfo) -> bool {
                true
            }
        }
    };
}
loose_type!(LooseText);
loose_type!(LooseInt);
loose_type!(LooseReal);
loose_type!(LooseBool);

impl<'r> Decode<'r, Sqlite> for LooseText {
    fn decode(value: SqliteValueRef<'r>) -> Result<Self, BoxDynError> {
        Ok(Self(match raw(value)? {
            Raw::Null => None,
            Raw::Int(i) => Some(i.to_string()),
            Raw::Real(r) => Some(r.to_string()),
            Raw::Text(s) => Some(s),
        }))
    }
}

impl<'r> Decode<'r, Sqlite> for LooseInt {
    fn decode(value: SqliteValueRef<'r>) -> Result<Self, BoxDynError> {
        Ok(Self(match raw(value)? {
            Raw::Null => None,
            Raw::Int(i) => Some(i),
            // Saturating float-to-int conversion: legacy REAL values are whole numbers in practice.
            Raw::Real(r) if r.is_finite() => Some(r as i64),
            Raw::Real(_) => None,
            Raw::Text(s) => {
                let s = s.trim();
                s.parse::<i64>().ok().or_else(|| {
                    s.parse::<f64>()
                        .ok()
                        .filter(|f| f.is_finite())
                        .map(|f| f as i64)
                })
            }
        }))
    }
}

impl<'r> Decode<'r, Sqlite> for LooseReal {
    fn decode(value: SqliteValueRef<'r>) -> Result<Self, BoxDynError> {
        Ok(Self(match raw(value)? {
            Raw::Null => None,
            Raw::Int(i) => Some(i as f64),
            Raw::Real(r) => Some(r),
            Raw::Text(s) => s.trim().parse().ok(),
        }))
    }
}

impl<'r> Decode<'r, Sqlite> for LooseBool {
    fn decode(value: SqliteValueRef<'r>) -> Result<Self, BoxDynError> {
        Ok(Self(match raw(value)? {
            Raw::Null => false,
            Raw::Int(i) => i != 0,
            Raw::Real(r) => r != 0.0,
            Raw::Text(s) => matches!(s.trim().to_ascii_lowercase().as_str(), "1" | "true" | "yes"),
        }))
    }
}

impl From<LooseText> for Option<String> {
    fn from(v: LooseText) -> Self {
        v.0
    }
}
impl From<LooseInt> for Option<i64> {
    fn from(v: LooseInt) -> Self {
        v.0
    }
}
impl From<LooseReal> for Option<f64> {
    fn from(v: LooseReal) -> Self {
        v.0
    }
}
impl From<LooseBool> for bool {
    fn from(v: LooseBool) -> Self {
        v.0
    }
}
