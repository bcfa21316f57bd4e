//! Attributes of stored arrays and datasets (netCDF attributes, Zarr `attributes`): text,
//! whole numbers, real numbers and lists of numbers, as CF metadata uses them.

use serde_json::{Value, json};
use std::collections::BTreeMap;

/// One attribute's value.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub enum Attr {
    /// Text (`units = "K"`).
    Text(String),
    /// A whole number.
    Int(i64),
    /// A real number.
    Float(f64),
    /// Whole numbers (`valid_range = 0, 100`).
    Ints(Vec<i64>),
    /// Real numbers.
    Floats(Vec<f64>),
}

/// Attributes by name.
pub type Attrs = BTreeMap<String, Attr>;

impl From<&str> for Attr {
    fn from(v: &str) -> Attr {
        Attr::Text(v.to_string())
    }
}
impl From<String> for Attr {
    fn from(v: String) -> Attr {
        Attr::Text(v)
    }
}
impl From<i64> for Attr {
    fn from(v: i64) -> Attr {
        Attr::Int(v)
    }
}
impl From<i32> for Attr {
    fn from(v: i32) -> Attr {
        Attr::Int(v.into())
    }
}
impl From<f64> for Attr {
    fn from(v: f64) -> Attr {
        Attr::Float(v)
    }
}
impl From<Vec<i64>> for Attr {
    fn from(v: Vec<i64>) -> Attr {
        Attr::Ints(v)
    }
}
impl From<Vec<f64>> for Attr {
    fn from(v: Vec<f64>) -> Attr {
        Attr::Floats(v)
    }
}

impl Attr {
    /// The value as a number, if it is one number.
    pub fn as_f64(&self) -> Option<f64> {
        match self {
            Attr::Int(v) => Some(*v as f64),
            Attr::Float(v) => Some(*v),
            Attr::Ints(v) if v.len() == 1 => Some(v[0] as f64),
            Attr::Floats(v) if v.len() == 1 => Some(v[0]),
            _ => None,
        }
    }

    /// The value as text, if it is text.
    pub fn as_str(&self) -> Option<&str> {
        match self {
            Attr::Text(s) => Some(s),
            _ => None,
        }
    }

    /// The value in JSON, as Zarr stores it (non-finite numbers as `"NaN"`, `"Infinity"`,
    /// `"-Infinity"`, as Zarr writes fill values).
    pub(crate) fn to_json(&self) -> Value {
        fn float(v: f64) -> Value {
            if v.is_nan() {
                json!("NaN")
            } else if v.is_infinite() {
                json!(if v > 0.0 { "Infinity" } else { "-Infinity" })
            } else {
                json!(v)
            }
        }
        match self {
            Attr::Text(s) => json!(s),
            Attr::Int(v) => json!(v),
            Attr::Float(v) => float(*v),
            Attr::Ints(v) => json!(v),
            Attr::Floats(v) => Value::Array(v.iter().map(|&x| float(x)).collect()),
        }
    }

    #[cfg_attr(not(feature = "zarr"), allow(dead_code))]
    /// An attribute from JSON: strings, numbers, booleans (as 0 or 1) and lists of numbers
    /// as they are; anything else (objects, mixed lists, null) as its JSON text.
    pub(crate) fn from_json(value: &Value) -> Attr {
        match value {
            Value::String(s) => Attr::Text(s.clone()),
            Value::Bool(b) => Attr::Int(i64::from(*b)),
            Value::Number(n) => match n.as_i64() {
                Some(i) => Attr::Int(i),
                None => Attr::Float(n.as_f64().unwrap_or(f64::NAN)),
            },
            Value::Array(items) if !items.is_empty() && items.iter().all(Value::is_i64) => {
                Attr::Ints(items.iter().filter_map(Value::as_i64).collect())
            }
            Value::Array(items) if !items.is_empty() && items.iter().all(Value::is_number) => {
                Attr::Floats(items.iter().filter_map(Value::as_f64).collect())
            }
            other => Attr::Text(other.to_string()),
        }
    }
}

#[cfg(any(feature = "zarr", feature = "netcdf"))]
/// An array to store with its labels: its variable's name, its dimensions' names (one per
/// axis; none for a store without them) and its attributes.
pub(crate) struct Labelled<'a> {
    pub name: String,
    pub array: &'a super::Array,
    pub dims: Vec<String>,
    pub attrs: Attrs,
}

/// Attributes as a JSON object.
#[cfg(feature = "zarr")]
pub(crate) fn to_json(attrs: &Attrs) -> serde_json::Map<String, Value> {
    attrs
        .iter()
        .map(|(k, v)| (k.clone(), v.to_json()))
        .collect()
}

#[cfg(feature = "netcdf")]
mod netcdf_attrs {
    use super::Attr;
    use netcdf::AttributeValue as V;

    impl Attr {
        /// A netCDF attribute's value: every integer type as whole numbers, `float` and
        /// `double` as real numbers, strings as text (several joined by newlines).
        pub(crate) fn from_netcdf(value: V) -> Attr {
            fn ints<T: Into<i64>>(v: Vec<T>) -> Attr {
                Attr::Ints(v.into_iter().map(Into::into).collect())
            }
            match value {
                V::Uchar(v) => Attr::Int(v.into()),
                V::Schar(v) => Attr::Int(v.into()),
                V::Ushort(v) => Attr::Int(v.into()),
                V::Short(v) => Attr::Int(v.into()),
                V::Uint(v) => Attr::Int(v.into()),
                V::Int(v) => Attr::Int(v.into()),
                V::Ulonglong(v) => i64::try_from(v).map_or(Attr::Float(v as f64), Attr::Int),
                V::Longlong(v) => Attr::Int(v),
                V::Float(v) => Attr::Float(v.into()),
                V::Double(v) => Attr::Float(v),
                V::Uchars(v) => ints(v),
                V::Schars(v) => ints(v),
                V::Ushorts(v) => ints(v),
                V::Shorts(v) => ints(v),
                V::Uints(v) => ints(v),
                V::Ints(v) => ints(v),
                V::Ulonglongs(v) => Attr::Ints(
                    v.into_iter()
                        .map(|x| x.min(i64::MAX as u64) as i64)
                        .collect(),
                ),
                V::Longlongs(v) => Attr::Ints(v),
                V::Floats(v) => Attr::Floats(v.into_iter().map(f64::from).collect()),
                V::Doubles(v) => Attr::Floats(v),
                V::Str(s) => Attr::Text(s),
                V::Strs(v) => Attr::Text(v.join("\n")),
            }
        }

        /// The value netCDF stores: `int64`, `double`, their lists, or a string.
        pub(crate) fn to_netcdf(&self) -> V {
            match self {
                Attr::Text(s) => V::Str(s.clone()),
                Attr::Int(v) => V::Longlong(*v),
                Attr::Float(v) => V::Double(*v),
                Attr::Ints(v) => V::Longlongs(v.clone()),
                Attr::Floats(v) => V::Doubles(v.clone()),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_round_trips_what_it_holds() {
        for attr in [
            Attr::from("K"),
            Attr::from(3i64),
            Attr::from(2.5),
            Attr::from(vec![1i64, 2]),
            Attr::from(vec![0.5, 1.5]),
        ] {
            assert_eq!(Attr::from_json(&attr.to_json()), attr);
        }
        assert_eq!(Attr::Float(f64::NAN).to_json(), json!("NaN"));
        assert_eq!(Attr::from_json(&json!(true)), Attr::Int(1));
        assert_eq!(
            Attr::from_json(&json!({"a": 1})),
            Attr::Text("{\"a\":1}".into())
        );
    }
}
