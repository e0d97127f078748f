//! Integer expressions over knobs and shape parameters, evaluated with rhai.
//!
//! One engine is shared by the whole process. Expressions are compiled once, with strict
//! variables, against the names that may appear in them, so a misspelt knob is an error when
//! the task is loaded rather than when a candidate is evaluated.

use std::sync::LazyLock;

use rhai::{Dynamic, Engine, Scope, AST};

static ENGINE: LazyLock<Engine> = LazyLock::new(|| {
    let mut engine = Engine::new();
    // Compilation sees placeholder values; folding them as constants would be wrong.
    engine.set_optimization_level(rhai::OptimizationLevel::None);
    engine.set_strict_variables(true);
    engine.set_max_expr_depths(64, 64);
    engine.set_max_operations(100_000);
    engine.register_fn(
        "ceil_div",
        |a: i64, b: i64| -> Result<i64, Box<rhai::EvalAltResult>> {
            if b == 0 {
                return Err("ceil_div by zero".into());
            }
            Ok((a + b - 1).div_euclid(b))
        },
    );
    engine.register_fn("min", |a: i64, b: i64| a.min(b));
    engine.register_fn("max", |a: i64, b: i64| a.max(b));
    // For constraints translated from Python (`evoengineer import kernel-tuner`).
    engine.register_fn("min", |a: f64, b: f64| a.min(b));
    engine.register_fn("max", |a: f64, b: f64| a.max(b));
    engine.register_fn("floordiv", |a: i64, b: i64| {
        py_int_divmod(a, b).map(|(q, _)| q)
    });
    engine.register_fn("pymod", |a: i64, b: i64| {
        py_int_divmod(a, b).map(|(_, r)| r)
    });
    engine.register_fn("floordiv", |a: f64, b: f64| {
        py_float_divmod(a, b).map(|(q, _)| q)
    });
    engine.register_fn("pymod", |a: f64, b: f64| {
        py_float_divmod(a, b).map(|(_, r)| r)
    });
    engine
});

type Fallible<T> = Result<T, Box<rhai::EvalAltResult>>;

/// Python's `divmod` on integers: the quotient floors toward negative infinity and the
/// remainder takes the divisor's sign.
fn py_int_divmod(a: i64, b: i64) -> Fallible<(i64, i64)> {
    if b == 0 {
        return Err("integer division or modulo by zero".into());
    }
    let (q, r) = a
        .checked_div(b)
        .zip(a.checked_rem(b))
        .ok_or("integer overflow in floor division")?;
    if r != 0 && ((r < 0) != (b < 0)) {
        Ok((q - 1, r + b))
    } else {
        Ok((q, r))
    }
}

/// Python's `divmod` on floats, as CPython computes it (`float_divmod`).
fn py_float_divmod(a: f64, b: f64) -> Fallible<(f64, f64)> {
    if b == 0.0 {
        return Err("float division or modulo by zero".into());
    }
    let mut m = a % b;
    let mut div = (a - m) / b;
    if m != 0.0 {
        if (b < 0.0) != (m < 0.0) {
            m += b;
            div -= 1.0;
        }
    } else {
        m = 0.0_f64.copysign(b);
    }
    let q = if div != 0.0 {
        let f = div.floor();
        if div - f > 0.5 {
            f + 1.0
        } else {
            f
        }
    } else {
        0.0_f64.copysign(a / b)
    };
    Ok((q, m))
}

/// An expression compiled against a fixed set of integer variables.
#[derive(Clone, Debug)]
pub struct Expr {
    text: String,
    ast: AST,
}

/// A failure to compile or evaluate an expression; the message is rhai's, made readable.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct ExprError(pub String);

impl Expr {
    /// Compiles `text`; every variable it names must be in `names`.
    pub fn compile<'a>(
        text: &str,
        names: impl IntoIterator<Item = &'a str>,
    ) -> Result<Expr, ExprError> {
        let mut scope = Scope::new();
        for name in names {
            scope.push(name.to_string(), 0_i64);
        }
        let ast = ENGINE
            .compile_expression_with_scope(&scope, text)
            .map_err(|e| ExprError(describe_parse_error(&e.to_string())))?;
        Ok(Expr {
            text: text.to_string(),
            ast,
        })
    }

    pub fn text(&self) -> &str {
        &self.text
    }

    fn eval_dynamic<'a>(
        &self,
        vars: impl IntoIterator<Item = (&'a str, i64)>,
    ) -> Result<Dynamic, ExprError> {
        let mut scope = Scope::new();
        for (name, value) in vars {
            scope.push(name.to_string(), value);
        }
        ENGINE
            .eval_ast_with_scope::<Dynamic>(&mut scope, &self.ast)
            .map_err(|e| ExprError(format!("`{}`: {e}", self.text)))
    }

    /// Evaluates to an integer.
    pub fn eval_int<'a>(
        &self,
        vars: impl IntoIterator<Item = (&'a str, i64)>,
    ) -> Result<i64, ExprError> {
        let value = self.eval_dynamic(vars)?;
        value.as_int().map_err(|ty| {
            ExprError(format!(
                "`{}` gives a value of type {ty}, not an integer",
                self.text
            ))
        })
    }

    /// Evaluates to a boolean (constraints).
    pub fn eval_bool<'a>(
        &self,
        vars: impl IntoIterator<Item = (&'a str, i64)>,
    ) -> Result<bool, ExprError> {
        let value = self.eval_dynamic(vars)?;
        value.as_bool().map_err(|ty| {
            ExprError(format!(
                "`{}` gives a value of type {ty}, not true or false",
                self.text
            ))
        })
    }
}

fn describe_parse_error(raw: &str) -> String {
    // rhai says "Variable not found: X (line 1, position 5)"; keep it, it is already clear.
    raw.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn evaluates_arithmetic_and_helpers() {
        let e = Expr::compile("ceil_div(N, B) * 2 + min(N, 3)", ["N", "B"]).unwrap();
        assert_eq!(e.eval_int([("N", 10), ("B", 4)]).unwrap(), 9);
    }

    #[test]
    fn constraint_is_boolean() {
        let e = Expr::compile("A * B <= 16", ["A", "B"]).unwrap();
        assert!(e.eval_bool([("A", 4), ("B", 4)]).unwrap());
        assert!(!e.eval_bool([("A", 4), ("B", 5)]).unwrap());
        assert!(e.eval_int([("A", 4), ("B", 5)]).is_err());
    }

    #[test]
    fn unknown_variable_is_a_compile_error() {
        let err = Expr::compile("A * C", ["A", "B"]).unwrap_err();
        assert!(err.0.contains('C'), "{err}");
    }

    #[test]
    fn syntax_error_is_reported() {
        assert!(Expr::compile("A * (B", ["A", "B"]).is_err());
    }

    #[test]
    fn python_floor_division_and_modulo() {
        let vars = |a, b| [("A", a), ("B", b)];
        let fd = Expr::compile("floordiv(A, B)", ["A", "B"]).unwrap();
        let md = Expr::compile("pymod(A, B)", ["A", "B"]).unwrap();
        // Python: 7//2=3, -7//2=-4, 7//-2=-4, -7//-2=3; 7%2=1, -7%2=1, 7%-2=-1, -7%-2=-1.
        for (a, b, q, r) in [
            (7, 2, 3, 1),
            (-7, 2, -4, 1),
            (7, -2, -4, -1),
            (-7, -2, 3, -1),
        ] {
            assert_eq!(fd.eval_int(vars(a, b)).unwrap(), q, "{a}//{b}");
            assert_eq!(md.eval_int(vars(a, b)).unwrap(), r, "{a}%{b}");
        }
        assert!(fd.eval_int(vars(1, 0)).is_err());
        assert!(md.eval_int(vars(i64::MIN, -1)).is_err());
        // Floats: -7.5 // 2 = -4.0, -7.5 % 2 = 0.5, 7.5 % -2 = -0.5.
        let f = Expr::compile(
            "floordiv(-7.5, 2.0) == -4.0 && pymod(-7.5, 2.0) == 0.5 && pymod(7.5, -2.0) == -0.5",
            [],
        )
        .unwrap();
        assert!(f.eval_bool([]).unwrap());
        // True division compares as floats: 7 / 2 == 3.5.
        let t = Expr::compile("A.to_float() / B.to_float() == 3.5", ["A", "B"]).unwrap();
        assert!(t.eval_bool(vars(7, 2)).unwrap());
        let m = Expr::compile("max(1.5, 2.0) == 2.0 && min(1.5, 2.0) == 1.5", []).unwrap();
        assert!(m.eval_bool([]).unwrap());
    }

    #[test]
    fn division_by_zero_is_an_error_not_a_panic() {
        let e = Expr::compile("A / B", ["A", "B"]).unwrap();
        assert!(e.eval_int([("A", 1), ("B", 0)]).is_err());
        let e = Expr::compile("ceil_div(A, B)", ["A", "B"]).unwrap();
        assert!(e.eval_int([("A", 1), ("B", 0)]).is_err());
    }
}
