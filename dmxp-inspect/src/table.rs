//! Aligned text tables (elastic tabstops from `tabwriter`).

use std::io::{self, Write};

use tabwriter::TabWriter;

/// Writes `rows` (the first is the heading) as left-aligned columns two spaces apart.
pub fn write<W: Write>(out: W, rows: &[Vec<String>]) -> io::Result<()> {
    let mut tw = TabWriter::new(out).padding(2);
    for row in rows {
        writeln!(tw, "{}", row.join("\t"))?;
    }
    tw.flush()
}

/// Renders `rows` to a string.
pub fn render(rows: &[Vec<String>]) -> String {
    let mut buf = Vec::new();
    // Writing to a Vec cannot fail.
    let _ = write(&mut buf, rows);
    String::from_utf8_lossy(&buf).into_owned()
}
