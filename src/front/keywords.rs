//! The language's keywords: one table per kind (layer kinds, layer options, types, operators).
//! Each row is a variant and its spelling; `ALL` lists the rows in the order messages list them.
//!
//! The grammar (`grammar/incc.pest`) spells the same words in `layer_word`, `pool_word`, `flag`,
//! `type_name`, `add_op` and `mul_op`, and excludes them from names through `keyword`; the test
//! `front::parse::tests::the_grammar_spells_the_tables` fails when the two differ.
//!
//! A new layer kind is a row of `LayerKind` (with the options it takes), its word in the grammar's
//! `layer_word`, its arm in `elab::layer::lower`, and its op in `ir/ops`.

use OptionName::*;

/// Declares a keyword table: an enum with `ALL`, `keyword` and `from_keyword`, and optionally one
/// more column, a method with a value per row (`Variant = "keyword" => value`).
macro_rules! keyword_table {
    (
        $(#[$doc:meta])*
        pub enum $name:ident, fn $column:ident(self) -> $ty:ty {
            $($variant:ident = $keyword:literal => $value:expr,)+
        }
    ) => {
        keyword_table! { $(#[$doc])* pub enum $name { $($variant = $keyword,)+ } }

        impl $name {
            pub fn $column(self) -> $ty {
                match self {
                    $($name::$variant => $value,)+
                }
            }
        }
    };
    (
        $(#[$doc:meta])*
        pub enum $name:ident {
            $($variant:ident = $keyword:literal,)+
        }
    ) => {
        $(#[$doc])*
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
        pub enum $name {
            $($variant,)+
        }

        impl $name {
            /// Every row, in the table's order.
            pub const ALL: &'static [$name] = &[$($name::$variant,)+];

            /// The word as written in a `.inc` file.
            pub fn keyword(self) -> &'static str {
                match self {
                    $($name::$variant => $keyword,)+
                }
            }

            /// Every row's keyword, in the table's order.
            pub fn keywords() -> Vec<&'static str> {
                $name::ALL.iter().map(|row| row.keyword()).collect()
            }

            pub fn from_keyword(word: &str) -> Option<$name> {
                $name::ALL.iter().copied().find(|row| row.keyword() == word)
            }
        }
    };
}

keyword_table! {
    /// A kind of layer, and the options it takes (`options`, in the order messages list them).
    pub enum LayerKind, fn options(self) -> &'static [OptionName] {
        Input = "input" => &[],
        Conv = "conv" => &[Stride, Pad, Valid, Same, Bias, NoBias, Bn, NoBn, Relu, Linear],
        MaxPool = "maxpool" => &[Stride, Pad, Valid, Same],
        AvgPool = "avgpool" => &[Stride, Pad, Valid, Same, IncludePad, ExcludePad],
        GlobalAvgPool = "global avgpool" => &[],
        GlobalMaxPool = "global maxpool" => &[],
        Dropout = "dropout" => &[],
        Fc = "fc" => &[Bias, NoBias, Relu, Linear],
        Flatten = "flatten" => &[],
        Softmax = "softmax" => &[],
        Relu = "relu" => &[],
    }
}

keyword_table! {
    /// A layer option, and the setting it decides (`sets`): two options of one layer that decide
    /// the same setting contradict each other. `stride`, `pad` and `bn` take a value, the others
    /// (the flags) do not.
    pub enum OptionName, fn sets(self) -> &'static str {
        Stride = "stride" => "stride",
        Pad = "pad" => "padding",
        Valid = "valid" => "padding",
        Same = "same" => "padding",
        Bias = "bias" => "bias",
        NoBias = "nobias" => "bias",
        Bn = "bn" => "batch norm",
        NoBn = "nobn" => "batch norm",
        Relu = "relu" => "activation",
        Linear = "linear" => "activation",
        IncludePad = "include_pad" => "padding count",
        ExcludePad = "exclude_pad" => "padding count",
    }
}

impl OptionName {
    /// A flag is an option without a value.
    pub fn is_flag(self) -> bool {
        !matches!(self, Stride | Pad | Bn)
    }
}

keyword_table! {
    /// The type of a block parameter.
    pub enum Type {
        Int = "int",
        Float = "float",
        Bool = "bool",
        Str = "str",
    }
}

keyword_table! {
    /// A binary operator of expressions (the grammar gives `*`, `/` and `%` precedence over `+` and `-`).
    pub enum BinOp {
        Add = "+",
        Sub = "-",
        Mul = "*",
        Div = "/",
        Rem = "%",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn round_trips<T: Copy + PartialEq + std::fmt::Debug>(all: &[T], keyword: fn(T) -> &'static str, from_keyword: fn(&str) -> Option<T>) {
        for &row in all {
            assert_eq!(from_keyword(keyword(row)), Some(row), "`{}`", keyword(row));
        }
        let mut words: Vec<&str> = all.iter().map(|&row| keyword(row)).collect();
        words.sort();
        words.dedup();
        assert_eq!(words.len(), all.len(), "two rows share a keyword");
    }

    #[test]
    fn every_table_round_trips() {
        round_trips(LayerKind::ALL, LayerKind::keyword, LayerKind::from_keyword);
        round_trips(OptionName::ALL, OptionName::keyword, OptionName::from_keyword);
        round_trips(Type::ALL, Type::keyword, Type::from_keyword);
        round_trips(BinOp::ALL, BinOp::keyword, BinOp::from_keyword);
        assert_eq!((LayerKind::from_keyword("pool"), OptionName::from_keyword("padding")), (None, None));
        assert_eq!((Type::from_keyword("string"), BinOp::from_keyword("//")), (None, None));
    }

    #[test]
    fn a_layer_lists_its_options_once_in_table_order() {
        for &kind in LayerKind::ALL {
            let positions: Vec<usize> = kind.options().iter().map(|o| OptionName::ALL.iter().position(|x| x == o).expect("every option is a row")).collect();
            assert!(positions.windows(2).all(|w| w[0] < w[1]), "{kind:?}: {:?}", kind.options());
        }
    }
}
