//! Arithmetic per iteration of a kernel's main loop, counted from the shader itself: the WGSL a
//! pipeline compiles (`shaders::compose`), parsed by naga and walked from the entry point's first
//! loop, with the branches that the pipeline's override constants decide (`FORMAT == Q4`, a
//! function returning `SWIGLU`) evaluated here. A device-independent proxy for GEMV speed on ALU-bound devices
//! (lavapipe, SwiftShader) and for the unpacking cost on real GPUs.
//!
//! Counting, per scalar component (GPUs execute vector ops lane by lane): arithmetic, logic,
//! comparisons, selects, conversions and math functions count their result components (`dot`
//! counts its operands', packing/unpacking builtins their lanes, `dot4I8Packed`/`dot4U8Packed` 1:
//! one DP4A instruction where GPUs have it, while llvmpipe expands it per byte, so lavapipe
//! pays more for it than the count says: BENCHMARKS.md); bitcasts, swizzles, splats,
//! composes, index computations and memory accesses count 0 (loads are reported apart). A call
//! counts its callee's body. A branch on a folded constant counts the arm taken; a data-dependent
//! branch its larger arm. A nested loop counts its body `trips` times: the literal bound of a
//! `for (var i = 0u; i < N; ...)`, else the caller's `nested_trips` (e.g. rows per workgroup).

use std::collections::HashMap;

use naga::{Block, Expression, Function, Handle, MathFunction, Module, Statement, TypeInner};
use wgpu::naga;

/// What one iteration of the main loop executes.
#[derive(Clone, Copy, Debug, Default, PartialEq, serde::Serialize)]
pub struct LoopCost {
    /// ALU instructions (scalar components).
    pub alu: u64,
    /// Loads of global variables (storage, uniform, workgroup), scalar or vector alike; locals
    /// are registers.
    pub loads: u64,
}

impl std::ops::Add for LoopCost {
    type Output = Self;
    fn add(self, o: Self) -> Self {
        Self { alu: self.alu + o.alu, loads: self.loads + o.loads }
    }
}

impl LoopCost {
    fn times(self, n: u64) -> Self {
        Self { alu: self.alu * n, loads: self.loads * n }
    }
    fn max(self, o: Self) -> Self {
        if o.alu > self.alu {
            o
        } else {
            self
        }
    }
}

/// The cost of one iteration of the first loop in `entry` of `wgsl`, with `constants` (override
/// name → value) applied.
pub fn main_loop_cost(
    wgsl: &str,
    entry: &str,
    constants: &[(&str, f64)],
    nested_trips: u64,
) -> Result<LoopCost, String> {
    let module = naga::front::wgsl::parse_str(wgsl).map_err(|e| e.emit_to_string(wgsl))?;
    let mut validator =
        naga::valid::Validator::new(naga::valid::ValidationFlags::all(), naga::valid::Capabilities::all());
    let info = validator.validate(&module).map_err(|e| format!("{e:?}"))?;
    let constants: HashMap<String, f64> = constants.iter().map(|(n, v)| ((*n).to_string(), *v)).collect();
    let (index, ep) = module
        .entry_points
        .iter()
        .enumerate()
        .find(|(_, e)| e.name == entry)
        .ok_or_else(|| format!("no entry point `{entry}`"))?;
    let walker = Walker { module: &module, info: &info, nested_trips, constants, memo: Default::default() };
    let fun = FnView { f: &ep.function, info: info.get_entry_point(index) };
    // calls before the loop (e.g. `let sw = swiglu_on();`) decide branches inside it
    let mut calls = Calls::default();
    record_calls(&ep.function.body, &mut calls);
    let body = walker
        .first_loop(&ep.function, &ep.function.body, &mut calls)
        .ok_or_else(|| format!("`{entry}` has no loop"))?;
    calls.enter_loop(&ep.function, &[body.0, body.1]);
    Ok(walker.block(&fun, &[body.0, body.1], &mut calls).0)
}

/// Every statement of `blocks`, nested blocks included (not into calls), in order.
fn each_statement(blocks: &[&Block], visit: &mut impl FnMut(&Statement)) {
    for b in blocks {
        for s in b.iter() {
            visit(s);
            match s {
                Statement::Block(x) => each_statement(&[x], visit),
                Statement::If { accept, reject, .. } => each_statement(&[accept, reject], visit),
                Statement::Loop { body, continuing, .. } => each_statement(&[body, continuing], visit),
                Statement::Switch { cases, .. } => {
                    for c in cases {
                        each_statement(&[&c.body], visit);
                    }
                }
                _ => {}
            }
        }
    }
}

/// Every call's result expression in `block` and below.
fn record_calls(block: &Block, calls: &mut Calls) {
    each_statement(&[block], &mut |s| {
        if let Statement::Call { function, result: Some(r), .. } = s {
            calls.results.insert(*r, *function);
        }
    });
}

/// A function and its analysis.
struct FnView<'a> {
    f: &'a Function,
    info: &'a naga::valid::FunctionInfo,
}

struct Walker<'a> {
    module: &'a Module,
    info: &'a naga::valid::ModuleInfo,
    nested_trips: u64,
    constants: HashMap<String, f64>,
    memo: std::cell::RefCell<HashMap<Handle<Function>, LoopCost>>,
}

#[derive(Clone, Copy, PartialEq)]
enum Value {
    Bool(bool),
    Num(f64),
}

/// What the walk knows in a function: call results seen (result expression → callee), and local
/// variables holding a constant (naga lowers `a || b` to a local set under an `if`).
#[derive(Clone, Default)]
struct Calls {
    results: HashMap<Handle<Expression>, Handle<Function>>,
    /// `Some(None)`: stored with a value not known here (e.g. a loop counter).
    locals: HashMap<Handle<naga::LocalVariable>, Option<Value>>,
}

impl Calls {
    /// Forget what the loop `blocks` store (they run again with other values).
    fn enter_loop(&mut self, f: &Function, blocks: &[&Block]) {
        each_statement(blocks, &mut |s| {
            if let Statement::Store { pointer, .. } = s {
                if let Expression::LocalVariable(lv) = f.expressions[*pointer] {
                    self.locals.insert(lv, None);
                }
            }
        });
    }
}

impl<'a> Walker<'a> {
    /// The body and continuing block of the first loop the constants let run in `block` (depth
    /// first, not into calls).
    fn first_loop<'b>(&self, f: &'b Function, block: &'b Block, calls: &mut Calls) -> Option<(&'b Block, &'b Block)> {
        for s in block.iter() {
            let found = match s {
                Statement::Loop { body, continuing, .. } => return Some((body, continuing)),
                Statement::Block(b) => self.first_loop(f, b, calls),
                // locals set before the loop decide branches (naga lowers `a || b` to one)
                Statement::Store { pointer, value } => {
                    self.store(f, *pointer, *value, calls);
                    None
                }
                Statement::If { condition, accept, reject } => match self.eval(f, *condition, calls) {
                    Some(Value::Bool(true)) => self.first_loop(f, accept, calls),
                    Some(Value::Bool(false)) => self.first_loop(f, reject, calls),
                    _ => self.first_loop(f, accept, calls).or_else(|| self.first_loop(f, reject, calls)),
                },
                _ => None,
            };
            if found.is_some() {
                return found;
            }
        }
        None
    }

    /// Cost of running `b` once, and whether it always returns (the rest of its caller's block is
    /// then not reached).
    fn block(&self, fun: &FnView, blocks: &[&Block], calls: &mut Calls) -> (LoopCost, bool) {
        let mut total = LoopCost::default();
        for block in blocks {
            for s in block.iter() {
                let (c, returns) = self.statement(fun, s, calls);
                total = total + c;
                if returns {
                    return (total, true);
                }
            }
        }
        (total, false)
    }

    fn statement(&self, fun: &FnView, s: &Statement, calls: &mut Calls) -> (LoopCost, bool) {
        match s {
            Statement::Emit(range) => {
                // what the constants decide is folded by the compiler: free
                let live = range.clone().filter(|&h| self.eval(fun.f, h, calls).is_none());
                (live.map(|h| self.expression(fun, h)).fold(LoopCost::default(), |a, b| a + b), false)
            }
            Statement::Block(b) => self.block(fun, &[b], calls),
            Statement::If { condition, accept, reject } => match self.constant_bool(fun, *condition, calls) {
                Some(true) => self.block(fun, &[accept], calls),
                Some(false) => self.block(fun, &[reject], calls),
                None => {
                    let mut other = calls.clone();
                    let (a, ra) = self.block(fun, &[accept], calls);
                    let (r, rr) = self.block(fun, &[reject], &mut other);
                    // keep what both arms agree on
                    calls.locals.retain(|lv, v| other.locals.get(lv) == Some(v));
                    calls.results.extend(other.results);
                    (a.max(r), ra && rr)
                }
            },
            Statement::Switch { cases, .. } => {
                let mut worst = LoopCost::default();
                for c in cases {
                    worst = worst.max(self.block(fun, &[&c.body], calls).0);
                }
                (worst, false)
            }
            Statement::Loop { body, continuing, .. } => {
                let trips = literal_trips(fun.f, body).unwrap_or(self.nested_trips);
                calls.enter_loop(fun.f, &[body, continuing]);
                let cost = self.block(fun, &[body, continuing], calls).0.times(trips);
                calls.enter_loop(fun.f, &[body, continuing]);
                (cost, false)
            }
            Statement::Store { pointer, value } => {
                self.store(fun.f, *pointer, *value, calls);
                (LoopCost::default(), false)
            }
            Statement::Call { function, result, .. } => {
                if let Some(r) = result {
                    calls.results.insert(*r, *function);
                }
                (self.function(*function), false)
            }
            Statement::Return { .. } => (LoopCost::default(), true),
            Statement::Atomic { .. } => (LoopCost { alu: 1, loads: 1 }, false),
            _ => (LoopCost::default(), false),
        }
    }

    fn function(&self, h: Handle<Function>) -> LoopCost {
        if let Some(c) = self.memo.borrow().get(&h) {
            return *c;
        }
        let f = &self.module.functions[h];
        let fun = FnView { f, info: &self.info[h] };
        let c = self.block(&fun, &[&f.body], &mut Calls::default()).0;
        self.memo.borrow_mut().insert(h, c);
        c
    }

    /// Remember what a store puts in a local variable (unknown unless the constants decide it).
    fn store(&self, f: &Function, pointer: Handle<Expression>, value: Handle<Expression>, calls: &mut Calls) {
        if let Expression::LocalVariable(lv) = f.expressions[pointer] {
            let v = self.eval(f, value, calls);
            calls.locals.insert(lv, v);
        }
    }

    /// A condition the override constants decide, or a call to a function that only returns one.
    fn constant_bool(&self, fun: &FnView, h: Handle<Expression>, calls: &Calls) -> Option<bool> {
        match self.eval(fun.f, h, calls)? {
            Value::Bool(b) => Some(b),
            Value::Num(_) => None,
        }
    }

    /// The value of an expression of `f` built from literals, constants, overrides, locals known
    /// to hold one, and calls to functions that only return one.
    fn eval(&self, f: &Function, h: Handle<Expression>, calls: &Calls) -> Option<Value> {
        use naga::{BinaryOperator as B, UnaryOperator as U};
        Some(match f.expressions[h] {
            Expression::Literal(_) | Expression::Constant(_) | Expression::Override(_) => {
                self.eval_global(&f.expressions, h)?
            }
            Expression::Load { pointer } => match f.expressions[pointer] {
                Expression::LocalVariable(lv) => match calls.locals.get(&lv) {
                    Some(v) => (*v)?,
                    None => self.eval(f, f.local_variables[lv].init?, calls)?,
                },
                _ => return None,
            },
            Expression::CallResult(_) => {
                let callee = &self.module.functions[*calls.results.get(&h)?];
                let ret = callee.body.iter().find_map(|s| match s {
                    Statement::Return { value: Some(v) } => Some(*v),
                    _ => None,
                })?;
                self.eval(callee, ret, &Calls::default())?
            }
            Expression::Unary { op: U::LogicalNot, expr } => match self.eval(f, expr, calls)? {
                Value::Bool(b) => Value::Bool(!b),
                Value::Num(_) => return None,
            },
            Expression::Binary { op, left, right } => {
                let (a, b) = (self.eval(f, left, calls)?, self.eval(f, right, calls)?);
                match (op, a, b) {
                    (B::LogicalAnd | B::And, Value::Bool(x), Value::Bool(y)) => Value::Bool(x && y),
                    (B::LogicalOr | B::InclusiveOr, Value::Bool(x), Value::Bool(y)) => Value::Bool(x || y),
                    (B::Equal, x, y) => Value::Bool(x == y),
                    (B::NotEqual, x, y) => Value::Bool(x != y),
                    (B::Less, Value::Num(x), Value::Num(y)) => Value::Bool(x < y),
                    (B::LessEqual, Value::Num(x), Value::Num(y)) => Value::Bool(x <= y),
                    (B::Greater, Value::Num(x), Value::Num(y)) => Value::Bool(x > y),
                    (B::GreaterEqual, Value::Num(x), Value::Num(y)) => Value::Bool(x >= y),
                    _ => return None,
                }
            }
            _ => return None,
        })
    }

    /// Literals, constants and overrides (the pipeline's value, else the declared default).
    fn eval_global(&self, arena: &naga::Arena<Expression>, h: Handle<Expression>) -> Option<Value> {
        use naga::Literal as L;
        let globals = &self.module.global_expressions;
        Some(match arena[h] {
            Expression::Literal(l) => match l {
                L::Bool(b) => Value::Bool(b),
                L::U32(v) => Value::Num(v as f64),
                L::I32(v) => Value::Num(v as f64),
                L::F32(v) => Value::Num(v as f64),
                L::AbstractInt(v) => Value::Num(v as f64),
                L::AbstractFloat(v) => Value::Num(v),
                _ => return None,
            },
            Expression::Constant(c) => self.eval_global(globals, self.module.constants[c].init)?,
            Expression::Override(o) => {
                let o = &self.module.overrides[o];
                let given = o.name.as_ref().and_then(|n| self.constants.get(n));
                match (given, o.init) {
                    (Some(&v), _) => match self.module.types[o.ty].inner {
                        TypeInner::Scalar(naga::Scalar::BOOL) => Value::Bool(v != 0.0),
                        _ => Value::Num(v),
                    },
                    (None, Some(init)) => self.eval_global(globals, init)?,
                    (None, None) => return None,
                }
            }
            _ => return None,
        })
    }

    fn components(&self, fun: &FnView, h: Handle<Expression>) -> u64 {
        match fun.info[h].ty.inner_with(&self.module.types) {
            TypeInner::Vector { size, .. } => *size as u64,
            TypeInner::Matrix { columns, rows, .. } => *columns as u64 * *rows as u64,
            _ => 1,
        }
    }

    fn expression(&self, fun: &FnView, h: Handle<Expression>) -> LoopCost {
        let n = self.components(fun, h);
        let alu = match &fun.f.expressions[h] {
            Expression::Load { pointer } => return LoopCost { alu: 0, loads: global_root(fun.f, *pointer) as u64 },
            Expression::Binary { .. } | Expression::Unary { .. } | Expression::Select { .. } => n,
            Expression::Relational { argument, .. } => self.components(fun, *argument),
            Expression::As { convert: Some(_), .. } => n,
            Expression::Math { fun: m, arg, .. } => match m {
                MathFunction::Dot => self.components(fun, *arg),
                MathFunction::Dot4I8Packed | MathFunction::Dot4U8Packed => 1,
                MathFunction::Unpack2x16float
                | MathFunction::Unpack2x16snorm
                | MathFunction::Unpack2x16unorm
                | MathFunction::Unpack4x8snorm
                | MathFunction::Unpack4x8unorm
                | MathFunction::Unpack4xI8
                | MathFunction::Unpack4xU8 => n,
                _ => n.max(self.components(fun, *arg)),
            },
            _ => 0,
        };
        LoopCost { alu, loads: 0 }
    }
}

/// The trip count of a loop naga lowered from `for (var i = 0u; i < N; i++)` with a literal N:
/// its body starts with `if (i < N) {} else { break; }`.
fn literal_trips(f: &Function, body: &Block) -> Option<u64> {
    let cond = body.iter().find_map(|s| match s {
        Statement::If { condition, .. } => Some(*condition),
        _ => None,
    })?;
    let Expression::Binary { op: naga::BinaryOperator::Less, right, .. } = f.expressions[cond] else {
        return None;
    };
    match f.expressions[right] {
        Expression::Literal(naga::Literal::U32(n)) => Some(n as u64),
        Expression::Literal(naga::Literal::I32(n)) if n >= 0 => Some(n as u64),
        _ => None,
    }
}

/// Whether a pointer expression points into a global variable (not a local or an argument).
fn global_root(f: &Function, mut h: Handle<Expression>) -> bool {
    loop {
        match f.expressions[h] {
            Expression::GlobalVariable(_) => return true,
            Expression::Access { base, .. } | Expression::AccessIndex { base, .. } => h = base,
            _ => return false,
        }
    }
}
