//! Plain-text tables for the operator: each column padded to its widest cell.

/// `rows` (the header first) as lines, two spaces between columns; the columns `right`
/// names are aligned right (numbers), the others left; no line ends in spaces.
pub fn render<const N: usize>(rows: &[[String; N]], right: impl Fn(usize) -> bool) -> String {
    let mut widths = [0usize; N];
    for cells in rows {
        for (width, cell) in widths.iter_mut().zip(cells) {
            *width = (*width).max(cell.chars().count());
        }
    }
    let mut out = String::new();
    for cells in rows {
        let mut line = String::new();
        for (i, (cell, width)) in cells.iter().zip(widths).enumerate() {
            let pad = " ".repeat(width.saturating_sub(cell.chars().count()));
            if right(i) {
                line.push_str(&format!("{pad}{cell}  "));
            } else {
                line.push_str(&format!("{cell}{pad}  "));
            }
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    #[test]
    fn columns_are_as_wide_as_their_widest_cell_and_numbers_align_right() {
        let rows = [
            ["node", "tok/s", "link"].map(str::to_owned),
            ["m4", "120", "up"].map(str::to_owned),
            ["ryzen-3090", "4", "down"].map(str::to_owned),
        ];
        assert_eq!(
            super::render(&rows, |i| i == 1),
            "node        tok/s  link\nm4            120  up\nryzen-3090      4  down\n"
        );
    }
}
