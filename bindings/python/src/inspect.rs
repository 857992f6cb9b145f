//! `python -m dmxp inspect`: the report and the text of the Rust `dmxp inspect`, from the same
//! crate (`dmxp-inspect`), so that both tools print the same bytes
//! (`tests/test_inspect_agreement.py` checks it). Only the glue is here: a report reaches
//! Python as the dict of its JSON (serde_json, then `json.loads`: the keys of
//! `dmxp inspect --json`, in its order), and comes back from a dict the same way.

use std::fs::File;

use dmxp_inspect::{Report, SourceJson};
use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;
use pyo3::types::PyDict;

fn source(kind: &str, name: &str) -> SourceJson {
    SourceJson {
        kind: kind.to_owned(),
        name: name.to_owned(),
    }
}

/// `report` as a dict (the object `dmxp inspect --json` prints).
fn to_dict<'py>(py: Python<'py>, report: &Report) -> PyResult<Bound<'py, PyDict>> {
    let json = serde_json::to_string(report).map_err(|e| PyValueError::new_err(e.to_string()))?;
    let dict = py.import("json")?.call_method1("loads", (json,))?;
    Ok(dict.cast_into::<PyDict>()?)
}

/// A report from a dict of [`to_dict`]'s shape; ValueError naming what is missing or wrong.
fn from_dict(py: Python<'_>, report: &Bound<'_, PyDict>) -> PyResult<Report> {
    let json: String = py
        .import("json")?
        .call_method1("dumps", (report,))?
        .extract()?;
    serde_json::from_str(&json)
        .map_err(|e| PyValueError::new_err(format!("not a dmxp inspect report: {e}")))
}

/// The `dmxp inspect --json` report of the object at `path` (a file, or an shm object's file
/// under /dev/shm), read without mapping or writing it; `kind` and `name` fill `source`.
/// Raises OSError (FileNotFoundError, PermissionError, ...) when it cannot be opened or read.
#[pyfunction]
#[pyo3(signature = (path, kind, name))]
pub(crate) fn inspect_path<'py>(
    py: Python<'py>,
    path: &str,
    kind: &str,
    name: &str,
) -> PyResult<Bound<'py, PyDict>> {
    let named = source(kind, name);
    let report = py.detach(|| File::open(path).and_then(|f| dmxp_inspect::snapshot(named, &f)))?;
    to_dict(py, &report)
}

/// The same report of a copy of a segment's bytes (`size` is their length; the peer table and
/// the slots are read from them too). `kind` and `name` fill `source`.
#[pyfunction]
#[pyo3(signature = (data, kind = "file", name = "segment"))]
pub(crate) fn inspect_bytes<'py>(
    py: Python<'py>,
    data: &Bound<'py, PyAny>,
    kind: &str,
    name: &str,
) -> PyResult<Bound<'py, PyDict>> {
    let report = crate::buffers::with_bytes(data, |bytes| {
        dmxp_inspect::snapshot(source(kind, name), bytes)
    })??;
    to_dict(py, &report)
}

/// The text `dmxp inspect` prints for `report` (a dict of `inspect_path` / `inspect_bytes`).
#[pyfunction]
pub(crate) fn inspect_text(py: Python<'_>, report: &Bound<'_, PyDict>) -> PyResult<String> {
    let report = from_dict(py, report)?;
    let mut text = Vec::new();
    dmxp_inspect::write_report(&mut text, &report)?;
    String::from_utf8(text).map_err(|e| PyValueError::new_err(e.to_string()))
}

/// The one line `dmxp inspect` prints on stderr for `report` when it fails (not a DMXP
/// segment, or invalid); None when the segment is valid.
#[pyfunction]
pub(crate) fn inspect_verdict(
    py: Python<'_>,
    report: &Bound<'_, PyDict>,
) -> PyResult<Option<String>> {
    Ok(dmxp_inspect::verdict(&from_dict(py, report)?))
}

/// `rows` (the first is the heading) as the tables of `dmxp` print them: left-aligned columns
/// two spaces apart, the last one unpadded.
#[pyfunction]
pub(crate) fn render_table(rows: Vec<Vec<String>>) -> String {
    dmxp_inspect::table::render(&rows)
}
