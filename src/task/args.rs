//! Argument encoding, once for every way of calling a function: `client.submit` (slots
//! that may be futures), `delayed` (slots that may be other delayed calls) and the
//! collections' own tasks. A call's arguments are a single argument for a one-argument
//! function, a tuple for more, `()` for none; each becomes one slot of the caller's slot
//! type `S`: an encoded value, or whatever else `S` can hold.

use crate::protocol::encode_owned;
use serde::Serialize;

/// A slot type that can hold an encoded value.
pub trait ValueSlot {
    /// The slot of an encoded value.
    fn value(bytes: Vec<u8>) -> Self;

    /// The slot of `value`, given away (by default, of its encoding: a slot type that can
    /// keep a large value's elements where they lie does so).
    fn owned<T: Serialize + 'static>(value: T) -> bincode::Result<Self>
    where
        Self: Sized,
    {
        Ok(Self::value(encode_owned(&value)?))
    }
}

/// One argument of type `T`, as a slot of type `S`: a value of type `T` (or a reference to
/// one) is encoded; the slot types add their own kinds (futures, delayed calls).
pub trait Arg<T, S> {
    /// The argument as a slot.
    fn into_slot(self) -> bincode::Result<S>;
}

impl<T: Serialize + 'static, S: ValueSlot> Arg<T, S> for T {
    fn into_slot(self) -> bincode::Result<S> {
        S::owned(self)
    }
}

impl<T: Serialize + 'static, S: ValueSlot> Arg<T, S> for &T {
    fn into_slot(self) -> bincode::Result<S> {
        Ok(S::value(encode_owned(self)?))
    }
}

/// The arguments of a call with parameter tuple `Args`, as slots of type `S`: a single
/// argument for a one-argument function, a tuple for more, `()` for none.
pub trait IntoArgs<Args, S> {
    /// The arguments as slots, in order.
    fn into_slots(self) -> bincode::Result<Vec<S>>;
}

impl<S> IntoArgs<(), S> for () {
    fn into_slots(self) -> bincode::Result<Vec<S>> {
        Ok(Vec::new())
    }
}

impl<X: Arg<A, S>, A, S> IntoArgs<(A,), S> for X {
    fn into_slots(self) -> bincode::Result<Vec<S>> {
        Ok(vec![self.into_slot()?])
    }
}

macro_rules! impl_into_args {
    ($(($x:ident, $a:ident)),+) => {
        impl<S, $($x: Arg<$a, S>, $a),+> IntoArgs<($($a,)+), S> for ($($x,)+) {
            #[allow(non_snake_case)]
            fn into_slots(self) -> bincode::Result<Vec<S>> {
                let ($($x,)+) = self;
                Ok(vec![$($x.into_slot()?),+])
            }
        }
    };
}

impl_into_args!((X1, A1), (X2, A2));
impl_into_args!((X1, A1), (X2, A2), (X3, A3));
impl_into_args!((X1, A1), (X2, A2), (X3, A3), (X4, A4));
impl_into_args!((X1, A1), (X2, A2), (X3, A3), (X4, A4), (X5, A5));
impl_into_args!((X1, A1), (X2, A2), (X3, A3), (X4, A4), (X5, A5), (X6, A6));

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::encode_value;

    #[derive(Debug, PartialEq)]
    enum Slot {
        Value(Vec<u8>),
        Marker,
    }

    impl ValueSlot for Slot {
        fn value(bytes: Vec<u8>) -> Self {
            Slot::Value(bytes)
        }
    }

    struct Placeholder;

    impl Arg<u32, Slot> for Placeholder {
        fn into_slot(self) -> bincode::Result<Slot> {
            Ok(Slot::Marker)
        }
    }

    fn slots<Args, X: IntoArgs<Args, Slot>>(args: X) -> Vec<Slot> {
        args.into_slots().unwrap()
    }

    #[test]
    fn values_encode_and_other_kinds_keep_their_place() {
        assert_eq!(slots::<(), _>(()), vec![]);
        assert_eq!(
            slots::<(u32,), _>(7u32),
            vec![Slot::Value(encode_value(&7u32).unwrap())]
        );
        assert_eq!(
            slots::<(u32, String), _>((Placeholder, &"x".to_string())),
            vec![Slot::Marker, Slot::Value(encode_value("x").unwrap())]
        );
    }
}
