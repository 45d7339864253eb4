//! Register maps: a device profile (YAML) that names a device's coils and registers, and the
//! decoding of a write against it, so that a policy can judge `active_power_setpoint = 1500 kW`
//! instead of "address 100, words 0 and 15000".
//!
//! ```yaml
//! device: bess-inverter            # lowercase letters, digits and '-'
//! description: ...                 # optional
//! unit_ids: [1]                    # the Modbus unit id(s) of the devices it describes, 1-255
//! registers:
//!   watchdog_heartbeat: {table: holding_registers, address: 40, type: u16}
//!   active_power_setpoint: {table: holding_registers, address: 100, type: i32, word_order: big, scale: 0.1, unit: kW}
//!   grid_disconnect: {table: coils, address: 0, type: bool}
//! ```
//!
//! - `table`: `holding_registers`, `input_registers`, `coils` or `discrete_inputs`.
//! - `type`: `u16`, `i16` (one register), `u32`, `i32`, `f32` (two registers) in the register
//!   tables; `bool` (one bit) in the bit tables.
//! - `word_order`: for 32-bit types, `big` (default: high word at the lower address) or `little`.
//! - `unit_ids`: required. A write to another unit behind the same address is not decoded against
//!   the map (no `registers` in the input), and the shipped policies refuse it.
//! - `scale`: multiplier from the raw number to the engineering value (default 1); `unit`, and
//!   `description`, are optional.
//!
//! Refused: unknown fields, duplicate keys, names that are not snake_case, a type that does not fit
//! the table, a register that runs past address 65535, and two registers of one table that share
//! an address.

use std::fmt;
use std::path::Path;
use std::sync::Arc;

use indexmap::IndexMap;
use regorus::Value;
use serde::Deserialize;
use serde_saphyr::Spanned;

use super::PolicyError;
use super::keys::keys;
use crate::proto::modbus::Table;

/// Largest profile we read; a register map is kilobytes.
pub const MAX_PROFILE_BYTES: u64 = 1024 * 1024;
/// Longest register or device name.
pub const MAX_NAME_LEN: usize = 64;

/// A validated register map of one kind of device.
#[derive(Debug, Clone)]
pub struct RegisterMap {
    device: String,
    description: Option<String>,
    /// The Modbus unit ids of the devices it describes (one address may front several units).
    unit_ids: Vec<u8>,
    /// Sorted by (table, address); no two of one table overlap.
    registers: Vec<Register>,
}

/// One named coil or register (or pair of registers).
#[derive(Debug, Clone, PartialEq)]
pub struct Register {
    pub name: Arc<str>,
    pub table: Table,
    pub address: u16,
    pub kind: Kind,
    pub word_order: WordOrder,
    pub scale: f64,
    pub unit: Option<Arc<str>>,
    pub description: Option<String>,
    /// `1 / scale` when that is a whole number (0.1 -> 10): dividing by it gives the correctly
    /// rounded value (15001 / 10 = 1500.1), where multiplying by 0.1 would give 1500.1000000000001.
    divisor: Option<f64>,
}

/// How the raw words of a register are read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Bool,
    U16,
    I16,
    U32,
    I32,
    F32,
}

impl Kind {
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Bool => "bool",
            Kind::U16 => "u16",
            Kind::I16 => "i16",
            Kind::U32 => "u32",
            Kind::I32 => "i32",
            Kind::F32 => "f32",
        }
    }

    /// Number of coils or registers the value occupies.
    pub fn width(self) -> u16 {
        match self {
            Kind::Bool | Kind::U16 | Kind::I16 => 1,
            Kind::U32 | Kind::I32 | Kind::F32 => 2,
        }
    }

    fn parse(s: &str) -> Option<Kind> {
        Some(match s {
            "bool" => Kind::Bool,
            "u16" => Kind::U16,
            "i16" => Kind::I16,
            "u32" => Kind::U32,
            "i32" => Kind::I32,
            "f32" => Kind::F32,
            _ => return None,
        })
    }
}

/// Which register of a 32-bit pair holds the high word.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum WordOrder {
    /// High word first (at the lower address): Modbus convention, SunSpec.
    #[default]
    Big,
    /// Low word first.
    Little,
}

/// A write as the policy sees it: the named values it sets, and what it touches that the map
/// cannot name.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct DecodedWrite {
    pub registers: Vec<DecodedRegister>,
    /// Addresses written that the map does not name.
    pub unmapped: Vec<u16>,
    /// Names of multi-register values only partly written (or, for 0x16 Mask Write Register,
    /// registers whose resulting value the gateway cannot know).
    pub partial: Vec<Arc<str>>,
}

/// One named value a write sets.
#[derive(Debug, Clone, PartialEq)]
pub struct DecodedRegister {
    pub name: Arc<str>,
    pub address: u16,
    /// "bool", "u16", "i16", "u32", "i32" or "f32".
    pub kind: &'static str,
    /// The words (coils: 0 or 1) as written, in address order.
    pub raw: Vec<u16>,
    /// The engineering value: the raw number times `scale`. NaN or infinite `f32`s stay so here
    /// and reach the policy as `null`.
    pub value: f64,
    pub unit: Option<Arc<str>>,
}

impl RegisterMap {
    /// Reads and validates a profile file.
    pub fn load(path: &Path) -> Result<RegisterMap, PolicyError> {
        let text = super::read_limited(path, MAX_PROFILE_BYTES)?;
        Self::parse_named(&path.display().to_string(), &text)
    }

    /// Parses and validates profile text.
    pub fn parse(text: &str) -> Result<RegisterMap, PolicyError> {
        Self::parse_named("<profile>", text)
    }

    fn parse_named(file: &str, text: &str) -> Result<RegisterMap, PolicyError> {
        let raw: RawProfile = serde_saphyr::from_str(text).map_err(|e| PolicyError::Profile {
            file: file.to_owned(),
            problems: vec![yaml_problem(&e)],
        })?;
        validate(raw).map_err(|problems| PolicyError::Profile {
            file: file.to_owned(),
            problems,
        })
    }

    /// The profile's `device` name (by convention an asset `kind` of zones.yaml).
    pub fn device(&self) -> &str {
        &self.device
    }

    pub fn description(&self) -> Option<&str> {
        self.description.as_deref()
    }

    /// The unit ids the profile declares (`unit_ids`), ascending.
    pub fn unit_ids(&self) -> &[u8] {
        &self.unit_ids
    }

    /// Whether requests to `unit_id` address a device this map describes.
    pub fn describes_unit(&self, unit_id: u8) -> bool {
        self.unit_ids.binary_search(&unit_id).is_ok()
    }

    /// All registers, ordered by table and address.
    pub fn registers(&self) -> &[Register] {
        &self.registers
    }

    /// The register called `name`.
    pub fn get(&self, name: &str) -> Option<&Register> {
        self.registers.iter().find(|r| &*r.name == name)
    }

    /// Decodes a write of `values` starting at `address` in `table` ("holding_registers",
    /// "coils", ...; coil values are 0 or 1). Values past address 65535 are ignored (the parser
    /// refuses such requests). An unknown table leaves every address unmapped.
    pub fn decode(&self, table: &str, address: u16, values: &[u16]) -> DecodedWrite {
        match parse_table(table) {
            Some(t) => self.decode_with(t, address, values.len(), |i| {
                values.get(i).copied().unwrap_or(0)
            }),
            None => DecodedWrite {
                unmapped: addresses(u32::from(address), end_of(address, values.len())).collect(),
                ..DecodedWrite::default()
            },
        }
    }

    /// [`RegisterMap::decode`] without a slice: `value_at(i)` is the i-th value (i < len).
    pub fn decode_with(
        &self,
        table: Table,
        address: u16,
        len: usize,
        value_at: impl Fn(usize) -> u16,
    ) -> DecodedWrite {
        let mut out = DecodedWrite::default();
        let start = u32::from(address);
        let end = end_of(address, len);
        let regs = self.table_slice(table);
        // The first register that ends after `start`.
        let first = regs.partition_point(|r| r.end() <= start);
        let mut next = regs.get(first..).unwrap_or_default().iter().peekable();
        let mut at = start;
        while at < end {
            match next.peek() {
                Some(r) if u32::from(r.address) <= at => {
                    if u32::from(r.address) >= start && r.end() <= end {
                        let offset = usize::from(r.address).saturating_sub(usize::from(address));
                        let raw: Vec<u16> = (0..usize::from(r.kind.width()))
                            .map(|i| value_at(offset.saturating_add(i)))
                            .collect();
                        out.registers.push(DecodedRegister {
                            name: r.name.clone(),
                            address: r.address,
                            kind: r.kind.as_str(),
                            value: r.value_of(&raw),
                            raw,
                            unit: r.unit.clone(),
                        });
                    } else {
                        out.partial.push(r.name.clone());
                    }
                    at = r.end();
                    next.next();
                }
                Some(r) => {
                    let gap_end = u32::from(r.address).min(end);
                    out.unmapped.extend(addresses(at, gap_end));
                    at = gap_end;
                }
                None => {
                    out.unmapped.extend(addresses(at, end));
                    at = end;
                }
            }
        }
        out
    }

    /// 0x16 Mask Write Register: the result depends on the register's current content, so a
    /// named register is `partial` and any other address `unmapped`.
    pub fn decode_mask_write(&self, table: Table, address: u16) -> DecodedWrite {
        let regs = self.table_slice(table);
        let at = u32::from(address);
        let hit = regs
            .get(regs.partition_point(|r| r.end() <= at))
            .filter(|r| u32::from(r.address) <= at);
        match hit {
            Some(r) => DecodedWrite {
                partial: vec![r.name.clone()],
                ..DecodedWrite::default()
            },
            None => DecodedWrite {
                unmapped: vec![address],
                ..DecodedWrite::default()
            },
        }
    }

    fn table_slice(&self, table: Table) -> &[Register] {
        let lo = self
            .registers
            .partition_point(|r| table_rank(r.table) < table_rank(table));
        let hi = self
            .registers
            .partition_point(|r| table_rank(r.table) <= table_rank(table));
        self.registers.get(lo..hi).unwrap_or_default()
    }
}

impl Register {
    /// One past the last address.
    fn end(&self) -> u32 {
        u32::from(self.address).saturating_add(u32::from(self.kind.width()))
    }

    /// The engineering value of `raw` (as many words as the kind is wide, in address order).
    pub fn value_of(&self, raw: &[u16]) -> f64 {
        let w0 = raw.first().copied().unwrap_or(0);
        let w1 = raw.get(1).copied().unwrap_or(0);
        let (hi, lo) = match self.word_order {
            WordOrder::Big => (w0, w1),
            WordOrder::Little => (w1, w0),
        };
        let [h0, h1] = hi.to_be_bytes();
        let [l0, l1] = lo.to_be_bytes();
        let bytes = [h0, h1, l0, l1];
        let n = match self.kind {
            Kind::Bool => f64::from(u8::from(w0 != 0)),
            Kind::U16 => f64::from(w0),
            Kind::I16 => f64::from(i16::from_be_bytes(w0.to_be_bytes())),
            Kind::U32 => f64::from(u32::from_be_bytes(bytes)),
            Kind::I32 => f64::from(i32::from_be_bytes(bytes)),
            Kind::F32 => f64::from(f32::from_be_bytes(bytes)),
        };
        match self.divisor {
            Some(d) => n / d,
            None => n * self.scale,
        }
    }
}

impl DecodedWrite {
    /// `registers` as the policy input's array of objects.
    pub fn registers_value(&self) -> Value {
        let k = keys();
        Value::from(
            self.registers
                .iter()
                .map(|r| {
                    let mut o = std::collections::BTreeMap::new();
                    o.insert(k.name.clone(), Value::String(r.name.clone()));
                    o.insert(k.address.clone(), Value::from(u64::from(r.address)));
                    o.insert(k.type_.clone(), Value::String(kind_value(r.kind)));
                    o.insert(
                        k.raw.clone(),
                        Value::from(
                            r.raw
                                .iter()
                                .map(|w| Value::from(u64::from(*w)))
                                .collect::<Vec<_>>(),
                        ),
                    );
                    o.insert(k.value.clone(), Value::from(r.value));
                    if let Some(unit) = &r.unit {
                        o.insert(k.unit.clone(), Value::String(unit.clone()));
                    }
                    Value::from(o)
                })
                .collect::<Vec<_>>(),
        )
    }

    /// `unmapped` as the policy input's array of addresses.
    pub fn unmapped_value(&self) -> Value {
        Value::from(
            self.unmapped
                .iter()
                .map(|a| Value::from(u64::from(*a)))
                .collect::<Vec<_>>(),
        )
    }

    /// `partial` as the policy input's array of names.
    pub fn partial_value(&self) -> Value {
        Value::from(
            self.partial
                .iter()
                .map(|n| Value::String(n.clone()))
                .collect::<Vec<_>>(),
        )
    }
}

/// The type names as shared strings, so that the input does not allocate them per register.
fn kind_value(kind: &'static str) -> Arc<str> {
    static KINDS: std::sync::LazyLock<[Arc<str>; 6]> =
        std::sync::LazyLock::new(|| ["bool", "u16", "i16", "u32", "i32", "f32"].map(Arc::from));
    KINDS
        .iter()
        .find(|k| &***k == kind)
        .cloned()
        .unwrap_or_else(|| Arc::from(kind))
}

fn end_of(address: u16, len: usize) -> u32 {
    let len = u32::try_from(len).unwrap_or(u32::MAX);
    u32::from(address).saturating_add(len).min(0x1_0000)
}

fn addresses(from: u32, to: u32) -> impl Iterator<Item = u16> {
    (from..to).filter_map(|a| u16::try_from(a).ok())
}

fn parse_table(s: &str) -> Option<Table> {
    Some(match s {
        "coils" => Table::Coils,
        "discrete_inputs" => Table::DiscreteInputs,
        "holding_registers" => Table::HoldingRegisters,
        "input_registers" => Table::InputRegisters,
        _ => return None,
    })
}

fn table_rank(t: Table) -> u8 {
    match t {
        Table::Coils => 0,
        Table::DiscreteInputs => 1,
        Table::HoldingRegisters => 2,
        Table::InputRegisters => 3,
    }
}

fn is_bit_table(t: Table) -> bool {
    matches!(t, Table::Coils | Table::DiscreteInputs)
}

/// One problem in a profile, at a 1-based line and column (0: unknown).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProfileProblem {
    pub line: u64,
    pub column: u64,
    pub message: String,
}

impl fmt::Display for ProfileProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.line > 0 {
            write!(f, "{}:{}: ", self.line, self.column)?;
        }
        write!(f, "error: {}", self.message)
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawProfile {
    device: Spanned<String>,
    #[serde(default)]
    description: Option<String>,
    #[serde(default)]
    unit_ids: Option<Spanned<Vec<Spanned<u8>>>>,
    registers: IndexMap<Spanned<String>, Spanned<RawRegister>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRegister {
    table: Spanned<String>,
    address: Spanned<u16>,
    #[serde(rename = "type")]
    kind: Spanned<String>,
    #[serde(default)]
    word_order: Option<Spanned<String>>,
    #[serde(default)]
    scale: Option<Spanned<f64>>,
    #[serde(default)]
    unit: Option<Spanned<String>>,
    #[serde(default)]
    description: Option<String>,
}

fn at<T>(s: &Spanned<T>, message: String) -> ProfileProblem {
    ProfileProblem {
        line: s.referenced.line(),
        column: s.referenced.column(),
        message,
    }
}

fn yaml_problem(e: &serde_saphyr::Error) -> ProfileProblem {
    let (line, column) = e.location().map_or((0, 0), |l| (l.line(), l.column()));
    let full = e.to_string();
    let first = full.lines().next().unwrap_or("invalid YAML").trim();
    let mut message = first.strip_prefix("error: ").unwrap_or(first);
    if let Some((head, rest)) = message.split_once(": ")
        && head.starts_with("line ")
        && head.contains(" column ")
    {
        message = rest;
    }
    if let Some((head, _)) = message.split_once(", set DuplicateKeyPolicy") {
        message = head;
    }
    ProfileProblem {
        line,
        column,
        message: message.to_owned(),
    }
}

fn is_snake_case(s: &str) -> bool {
    let mut chars = s.chars();
    chars.next().is_some_and(|c| c.is_ascii_lowercase())
        && chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
        && !s.ends_with('_')
        && !s.contains("__")
        && s.len() <= MAX_NAME_LEN
}

fn is_device_name(s: &str) -> bool {
    let mut chars = s.chars();
    chars.next().is_some_and(|c| c.is_ascii_lowercase())
        && chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
        && s.len() <= MAX_NAME_LEN
}

fn validate(raw: RawProfile) -> Result<RegisterMap, Vec<ProfileProblem>> {
    let mut problems = Vec::new();
    if !is_device_name(&raw.device.value) {
        problems.push(at(
            &raw.device,
            format!(
                "device `{}`: use a lowercase letter, then lowercase letters, digits or '-' (at most {MAX_NAME_LEN})",
                raw.device.value
            ),
        ));
    }
    if raw.registers.is_empty() {
        problems.push(at(&raw.device, "the profile names no registers".into()));
    }
    let mut unit_ids = Vec::new();
    match &raw.unit_ids {
        None => problems.push(at(
            &raw.device,
            "the profile names no `unit_ids`: list the Modbus unit id(s) of the devices it describes, e.g. `unit_ids: [1]`".into(),
        )),
        Some(list) if list.value.is_empty() => problems.push(at(
            list,
            "unit_ids is empty: list the Modbus unit id(s) of the devices the profile describes".into(),
        )),
        Some(list) => {
            for u in &list.value {
                if u.value == 0 {
                    problems.push(at(
                        u,
                        "unit id 0 is the broadcast address, no device's own: use 1-255".into(),
                    ));
                } else if unit_ids.contains(&u.value) {
                    problems.push(at(u, format!("unit id {} is listed twice", u.value)));
                } else {
                    unit_ids.push(u.value);
                }
            }
        }
    }
    unit_ids.sort_unstable();
    let mut registers: Vec<(Register, u64, u64)> = Vec::new();
    for (name, reg) in &raw.registers {
        if !is_snake_case(&name.value) {
            problems.push(at(
                name,
                format!(
                    "register `{}`: names are snake_case: a lowercase letter, then lowercase letters, digits and single '_' (at most {MAX_NAME_LEN})",
                    name.value
                ),
            ));
        }
        let r = &reg.value;
        let Some(table) = parse_table(&r.table.value) else {
            problems.push(at(
                &r.table,
                format!(
                    "register `{}`: unknown table `{}`; use holding_registers, input_registers, coils or discrete_inputs",
                    name.value, r.table.value
                ),
            ));
            continue;
        };
        let Some(kind) = Kind::parse(&r.kind.value) else {
            problems.push(at(
                &r.kind,
                format!(
                    "register `{}`: unknown type `{}`; use u16, i16, u32, i32, f32 (registers) or bool (coils, discrete inputs)",
                    name.value, r.kind.value
                ),
            ));
            continue;
        };
        if is_bit_table(table) != (kind == Kind::Bool) {
            problems.push(at(
                &r.kind,
                format!(
                    "register `{}`: type {} does not fit table {}; bool is for coils and discrete_inputs, the others for registers",
                    name.value,
                    kind.as_str(),
                    table.as_str()
                ),
            ));
            continue;
        }
        let word_order = match &r.word_order {
            None => WordOrder::Big,
            Some(w) if kind.width() < 2 => {
                problems.push(at(
                    w,
                    format!(
                        "register `{}`: word_order applies only to the 32-bit types u32, i32 and f32",
                        name.value
                    ),
                ));
                WordOrder::Big
            }
            Some(w) => match w.value.as_str() {
                "big" => WordOrder::Big,
                "little" => WordOrder::Little,
                other => {
                    problems.push(at(
                        w,
                        format!(
                            "register `{}`: unknown word_order `{other}`; use big (high word first) or little",
                            name.value
                        ),
                    ));
                    WordOrder::Big
                }
            },
        };
        let scale = match &r.scale {
            None => 1.0,
            Some(s) if s.value.is_finite() && s.value != 0.0 && kind != Kind::Bool => s.value,
            Some(s) => {
                problems.push(at(
                    s,
                    format!(
                        "register `{}`: scale must be a finite, non-zero number, and is not for bool",
                        name.value
                    ),
                ));
                1.0
            }
        };
        let end = u32::from(r.address.value).saturating_add(u32::from(kind.width()));
        if end > 0x1_0000 {
            problems.push(at(
                &r.address,
                format!(
                    "register `{}`: a {} at address {} runs past address 65535",
                    name.value,
                    kind.as_str(),
                    r.address.value
                ),
            ));
            continue;
        }
        if let Some(unit) = &r.unit
            && unit.value.trim().is_empty()
        {
            problems.push(at(
                unit,
                format!("register `{}`: unit is empty; omit it instead", name.value),
            ));
        }
        registers.push((
            Register {
                name: Arc::from(name.value.as_str()),
                table,
                address: r.address.value,
                kind,
                word_order,
                scale,
                unit: r.unit.as_ref().map(|u| Arc::from(u.value.as_str())),
                description: r.description.clone(),
                divisor: divisor_of(scale),
            },
            r.address.referenced.line(),
            r.address.referenced.column(),
        ));
    }
    registers.sort_by_key(|(r, _, _)| (table_rank(r.table), r.address));
    for pair in registers.windows(2) {
        if let [(a, _, _), (b, line, column)] = pair
            && a.table == b.table
            && u32::from(b.address) < a.end()
        {
            problems.push(ProfileProblem {
                line: *line,
                column: *column,
                message: format!(
                    "register `{}` at {} {} overlaps `{}` ({} at {})",
                    b.name,
                    b.table.as_str(),
                    b.address,
                    a.name,
                    a.kind.as_str(),
                    a.address
                ),
            });
        }
    }
    if !problems.is_empty() {
        problems.sort_by_key(|p| (p.line, p.column));
        return Err(problems);
    }
    Ok(RegisterMap {
        device: raw.device.value,
        description: raw.description,
        unit_ids,
        registers: registers.into_iter().map(|(r, _, _)| r).collect(),
    })
}

/// `1 / scale` when it is a whole number up to 10^9 (scale 0.1, 0.01, 0.5 ...).
fn divisor_of(scale: f64) -> Option<f64> {
    if scale.abs() >= 1.0 {
        return None;
    }
    let d = (1.0 / scale).round();
    (d.abs() <= 1e9 && (1.0 / d - scale).abs() <= f64::EPSILON * scale.abs()).then_some(d)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

    use super::*;

    const MAP: &str = "\
device: test-device
unit_ids: [1, 7]
registers:
  heartbeat: {table: holding_registers, address: 40, type: u16}
  power: {table: holding_registers, address: 100, type: i32, scale: 0.1, unit: kW}
  power_le: {table: holding_registers, address: 102, type: i32, word_order: little}
  temp: {table: holding_registers, address: 104, type: f32, unit: degC}
  offset: {table: holding_registers, address: 106, type: i16}
  count: {table: holding_registers, address: 107, type: u32}
  trip: {table: coils, address: 3, type: bool}
";

    fn map() -> RegisterMap {
        RegisterMap::parse(MAP).unwrap()
    }

    #[test]
    fn decodes_types_scale_and_word_order() {
        let m = map();
        let d = m.decode("holding_registers", 100, &[0, 15001, 0xFFFF, 0xFFFE]);
        assert!(d.unmapped.is_empty() && d.partial.is_empty());
        assert_eq!(d.registers.len(), 2);
        assert_eq!(&*d.registers[0].name, "power");
        assert_eq!(d.registers[0].value, 1500.1);
        assert_eq!(d.registers[0].unit.as_deref(), Some("kW"));
        // little: low word 0xFFFF first, high 0xFFFE: 0xFFFEFFFF = -65537
        assert_eq!(d.registers[1].value, -65537.0);
        let f = 21.5f32.to_bits().to_be_bytes();
        let hi = u16::from_be_bytes([f[0], f[1]]);
        let lo = u16::from_be_bytes([f[2], f[3]]);
        let d = m.decode("holding_registers", 104, &[hi, lo, 0xFFFF, 1, 2]);
        assert_eq!(d.registers[0].value, 21.5);
        assert_eq!(d.registers[1].value, -1.0);
        assert_eq!(d.registers[2].value, 65538.0);
        assert_eq!(d.registers[2].raw, vec![1, 2]);
    }

    #[test]
    fn partial_and_unmapped() {
        let m = map();
        // 99 unmapped, 100-101 power, 102 first half of power_le.
        let d = m.decode("holding_registers", 99, &[1, 0, 10, 7]);
        assert_eq!(d.unmapped, vec![99]);
        assert_eq!(d.registers.len(), 1);
        assert_eq!(d.partial, vec![Arc::from("power_le")]);
        // Second half only.
        let d = m.decode("holding_registers", 101, &[5]);
        assert!(d.registers.is_empty());
        assert_eq!(d.partial, vec![Arc::from("power")]);
        // Unknown table: all unmapped.
        let d = m.decode("file_records", 1, &[1, 2]);
        assert_eq!(d.unmapped, vec![1, 2]);
        // Coils.
        let d = m.decode("coils", 2, &[0, 1]);
        assert_eq!(d.unmapped, vec![2]);
        assert_eq!(d.registers[0].value, 1.0);
        // Near the top of the address space.
        let d = m.decode("holding_registers", 65535, &[1, 2]);
        assert_eq!(d.unmapped, vec![65535]);
        assert_eq!(
            m.decode_mask_write(Table::HoldingRegisters, 101)
                .partial
                .len(),
            1
        );
        assert_eq!(
            m.decode_mask_write(Table::HoldingRegisters, 41).unmapped,
            vec![41]
        );
    }

    #[test]
    fn refuses_bad_profiles() {
        let err = |text: &str| RegisterMap::parse(text).unwrap_err().to_string();
        let e = err(
            "device: d\nunit_ids: [1]\nregisters:\n  a: {table: holding_registers, address: 1, type: u32}\n  b: {table: holding_registers, address: 2, type: u16}\n",
        );
        assert!(e.contains("5:") && e.contains("overlaps `a`"), "{e}");
        let e = err(
            "device: d\nunit_ids: [1]\nregisters:\n  BadName: {table: holding_registers, address: 1, type: u16}\n",
        );
        assert!(e.contains("4:3") && e.contains("snake_case"), "{e}");
        let e = err(
            "device: d\nunit_ids: [1]\nregisters:\n  a: {table: holding_registers, address: 65535, type: f32}\n",
        );
        assert!(e.contains("past address 65535"), "{e}");
        let e = err(
            "device: d\nunit_ids: [1]\nregisters:\n  a: {table: holding_registers, address: 1, type: u16, colour: red}\n",
        );
        assert!(e.contains("colour"), "{e}");
        let e = err(
            "device: d\nunit_ids: [1]\nregisters:\n  a: {table: coils, address: 1, type: u16}\n",
        );
        assert!(e.contains("does not fit"), "{e}");
        let e = err(
            "device: d\nunit_ids: [1]\nregisters:\n  a: {table: holding_registers, address: 1, type: u16, word_order: big}\n",
        );
        assert!(e.contains("32-bit"), "{e}");
        let e = err(
            "device: d\nunit_ids: [1]\nregisters:\n  a: {table: holding_registers, address: 1, type: u16}\n  a: {table: holding_registers, address: 2, type: u16}\n",
        );
        assert!(e.contains("duplicate"), "{e}");
    }

    #[test]
    fn a_profile_names_its_units() {
        let m = map();
        assert_eq!(m.unit_ids(), &[1, 7]);
        assert!(m.describes_unit(7) && !m.describes_unit(2) && !m.describes_unit(0));
        let err = |units: &str| {
            RegisterMap::parse(&format!(
                "device: d\n{units}registers:\n  a: {{table: holding_registers, address: 1, type: u16}}\n"
            ))
            .unwrap_err()
            .to_string()
        };
        let e = err("");
        assert!(e.contains("1:9") && e.contains("no `unit_ids`"), "{e}");
        assert!(err("unit_ids: []\n").contains("empty"));
        let e = err("unit_ids: [1, 0]\n");
        assert!(e.contains("2:15") && e.contains("broadcast"), "{e}");
        assert!(err("unit_ids: [3, 3]\n").contains("twice"));
        let e = err("unit_ids: [256]\n");
        assert!(e.contains("2:"), "{e}");
    }

    #[test]
    fn divisor_rounds_like_the_decimal() {
        assert_eq!(divisor_of(0.1), Some(10.0));
        assert_eq!(divisor_of(0.01), Some(100.0));
        assert_eq!(divisor_of(2.0), None);
        assert_eq!(divisor_of(0.3), None);
    }
}
