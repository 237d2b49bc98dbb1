//! A small terminal screen, enough to replay what stm-remote (indicatif, console, dialoguer)
//! writes to a pty and see what is left on the screen at the end: printable text, `\r`, `\n`,
//! and the CSI sequences for cursor moves (`A` `B` `C` `D` `G` `H`) and erasing (`K`, `J`);
//! colours and modes are ignored. No line wrap: a line longer than the screen stays one line.

/// The lines left on the screen (and in the scrollback) after `raw`, without trailing spaces;
/// trailing empty lines removed.
pub fn screen(raw: &str) -> Vec<String> {
    let mut lines: Vec<Vec<char>> = vec![Vec::new()];
    let (mut row, mut col) = (0usize, 0usize);
    let mut chars = raw.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '\r' => col = 0,
            '\n' => {
                row += 1;
                col = 0;
            }
            '\x1b' => {
                if chars.peek() != Some(&'[') {
                    chars.next();
                    continue;
                }
                chars.next();
                let mut params = String::new();
                let mut cmd = ' ';
                for p in chars.by_ref() {
                    if p.is_ascii_alphabetic() || p == '@' || p == '~' {
                        cmd = p;
                        break;
                    }
                    params.push(p);
                }
                let n = params
                    .trim_start_matches('?')
                    .split(';')
                    .next()
                    .and_then(|p| p.parse::<usize>().ok());
                match cmd {
                    'A' => row = row.saturating_sub(n.unwrap_or(1).max(1)),
                    'B' => row += n.unwrap_or(1).max(1),
                    'C' => col += n.unwrap_or(1).max(1),
                    'D' => col = col.saturating_sub(n.unwrap_or(1).max(1)),
                    'G' => col = n.unwrap_or(1).saturating_sub(1),
                    'K' => {
                        while lines.len() <= row {
                            lines.push(Vec::new());
                        }
                        match n.unwrap_or(0) {
                            0 => lines[row].truncate(col),
                            1 => (0..col.min(lines[row].len())).for_each(|i| lines[row][i] = ' '),
                            _ => lines[row].clear(),
                        }
                    }
                    'J' => {
                        while lines.len() <= row {
                            lines.push(Vec::new());
                        }
                        if n.unwrap_or(0) == 0 {
                            lines[row].truncate(col);
                            lines.truncate(row + 1);
                        }
                    }
                    _ => {}
                }
            }
            c if c.is_control() => {}
            c => {
                while lines.len() <= row {
                    lines.push(Vec::new());
                }
                let line = &mut lines[row];
                while line.len() < col {
                    line.push(' ');
                }
                if col < line.len() {
                    line[col] = c;
                } else {
                    line.push(c);
                }
                col += 1;
            }
        }
    }
    let mut out: Vec<String> = lines
        .into_iter()
        .map(|l| l.into_iter().collect::<String>().trim_end().to_string())
        .collect();
    while out.last().is_some_and(|l| l.is_empty()) {
        out.pop();
    }
    out
}

/// A frame of indicatif's spinner (Braille patterns).
pub fn is_spinner(c: char) -> bool {
    ('\u{2801}'..='\u{28FF}').contains(&c)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redraws_and_clears_leave_only_what_stays() {
        let raw = "log 1\n[a] \u{2801} 1s flashing\n[b] \u{2802} 1s flashing\r\x1b[1A\x1b[2K\
                   log 2\n\r\x1b[2K[a] \u{2803} 2s flashing\n\x1b[1A\r\x1b[0JSummary\n";
        assert_eq!(screen(raw), ["log 1", "log 2", "Summary"]);
    }
}
