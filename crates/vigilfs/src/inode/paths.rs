//! From inodes back to their names: every path naming each of a set of
//! inodes, for reports that must say which files a failure hit.
//!
//! Directory entries are keyed by parent, so there is no index from a
//! child to its names; this walks the entries once for the whole set
//! (answering many inodes costs one walk, not one each). A file's paths
//! are its hard links; a directory's names come from the entry naming it,
//! then its parents' up to the root. Orphans (open but unlinked) have
//! none. A parent chain that does not reach the root within
//! [`MAX_DEPTH`] steps is reported as damage, never followed forever.
//!
//! Names are bytes; reports are text. [`printable`] is the one way a name
//! or path becomes text anywhere a person or a program reads it (events,
//! owners, unsynced, fault rules' paths): printable UTF-8 stays as it is,
//! and every other byte — control characters (a newline could forge a line
//! of a report, an escape sequence could drive a terminal), bytes that are
//! not UTF-8 — becomes `\xNN`, with a backslash itself written `\\`. The
//! text is lossless: two names never print the same.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fmt::Write as _;

use super::namespace::NamespaceError;
use super::record::{Dirent, DirentKey, FileType, ROOT_INO};
use crate::btree::{Btrees, TreeId};

/// Longest chain of directories followed up to the root.
const MAX_DEPTH: usize = 4096;

/// Every path naming each inode of `wanted`, sorted, as bytes (`/`
/// separated, from the root). Inodes with no name get no entry.
pub fn paths_of(
    trees: &Btrees,
    wanted: &BTreeSet<u64>,
) -> Result<BTreeMap<u64, Vec<Vec<u8>>>, NamespaceError> {
    let mut links: HashMap<u64, Vec<(u64, Vec<u8>)>> = HashMap::new();
    // Each directory's one entry: its parent and name.
    let mut directories: HashMap<u64, (u64, Vec<u8>)> = HashMap::new();
    for entry in trees.range(TreeId::Dirents, &[], None) {
        let (key, value) = entry?;
        let key = DirentKey::decode(&key)
            .map_err(|error| NamespaceError::Corrupt(format!("directory entry key: {error}")))?;
        let dirent = Dirent::decode(&value)
            .map_err(|error| NamespaceError::Corrupt(format!("directory entry: {error}")))?;
        if dirent.file_type == FileType::Directory {
            directories.insert(dirent.child, (key.parent, dirent.name.clone()));
        }
        if wanted.contains(&dirent.child) {
            links
                .entry(dirent.child)
                .or_default()
                .push((key.parent, dirent.name));
        }
    }
    let mut found = BTreeMap::new();
    for &ino in wanted {
        let mut paths = Vec::new();
        if ino == ROOT_INO {
            paths.push(b"/".to_vec());
        }
        for (parent, name) in links.get(&ino).into_iter().flatten() {
            let mut components = vec![name.clone()];
            let mut at = *parent;
            let mut depth = 0;
            while at != ROOT_INO {
                depth += 1;
                let Some((up, name)) = directories.get(&at).filter(|_| depth <= MAX_DEPTH) else {
                    return Err(NamespaceError::Corrupt(format!(
                        "directory {at} does not lead back to the root"
                    )));
                };
                components.push(name.clone());
                at = *up;
            }
            let mut path = Vec::new();
            for component in components.iter().rev() {
                path.push(b'/');
                path.extend_from_slice(component);
            }
            paths.push(path);
        }
        if !paths.is_empty() {
            paths.sort();
            found.insert(ino, paths);
        }
    }
    Ok(found)
}

/// `name` (or a path) as text: printable UTF-8 as it is, a backslash as
/// `\\`, every other byte as `\xNN` (see the module comment).
pub fn printable(name: &[u8]) -> String {
    let mut text = String::with_capacity(name.len());
    for chunk in name.utf8_chunks() {
        for character in chunk.valid().chars() {
            if character == '\\' {
                text.push_str("\\\\");
            } else if shows_wrongly(character) {
                let mut bytes = [0; 4];
                for byte in character.encode_utf8(&mut bytes).bytes() {
                    let _ = write!(text, "\\x{byte:02x}");
                }
            } else {
                text.push(character);
            }
        }
        for byte in chunk.invalid() {
            let _ = write!(text, "\\x{byte:02x}");
        }
    }
    text
}

/// The bytes [`printable`] wrote `text` from (`\\` a backslash, `\xNN` a
/// byte); `None` when a backslash starts anything else.
pub fn from_printable(text: &str) -> Option<Vec<u8>> {
    let mut bytes = Vec::with_capacity(text.len());
    let mut rest = text.as_bytes();
    while let Some((&byte, after)) = rest.split_first() {
        rest = after;
        if byte != b'\\' {
            bytes.push(byte);
            continue;
        }
        match rest {
            [b'\\', after @ ..] => {
                bytes.push(b'\\');
                rest = after;
            }
            [b'x', high, low, after @ ..]
                if high.is_ascii_hexdigit() && low.is_ascii_hexdigit() =>
            {
                let hex = [*high, *low];
                bytes.push(u8::from_str_radix(std::str::from_utf8(&hex).ok()?, 16).ok()?);
                rest = after;
            }
            _ => return None,
        }
    }
    Some(bytes)
}

/// Whether `character` cannot be shown as it is: a control character, or
/// one of [`misleads_when_shown`]'s. [`printable`] escapes these; a label
/// must not hold them.
pub fn shows_wrongly(character: char) -> bool {
    character.is_control() || misleads_when_shown(character)
}

/// Characters that are not control characters yet change how a line reads:
/// line and paragraph separators, the bidirectional marks, embeddings,
/// overrides and isolates (text that displays in another order than it is
/// stored), and the characters that display as nothing (zero-width spaces
/// and joiners, the byte-order mark, soft hyphen, variation selectors,
/// fillers and tags: Unicode's default-ignorable code points), with which
/// two names would show as one.
fn misleads_when_shown(character: char) -> bool {
    matches!(
        character,
        '\u{00ad}'
            | '\u{034f}'
            | '\u{061c}'
            | '\u{115f}'..='\u{1160}'
            | '\u{17b4}'..='\u{17b5}'
            | '\u{180b}'..='\u{180f}'
            | '\u{200b}'..='\u{200f}'
            | '\u{2028}'..='\u{202e}'
            | '\u{2060}'..='\u{206f}'
            | '\u{3164}'
            | '\u{fe00}'..='\u{fe0f}'
            | '\u{feff}'
            | '\u{ffa0}'
            | '\u{fff0}'..='\u{fffb}'
            | '\u{1bca0}'..='\u{1bca3}'
            | '\u{1d173}'..='\u{1d17a}'
            | '\u{e0000}'..='\u{e0fff}'
    )
}

#[cfg(test)]
mod tests {
    use super::{from_printable, printable};

    #[test]
    fn printable_text_gives_back_the_bytes_it_was_made_from() {
        for name in [
            &b"plain"[..],
            b"tab\there",
            b"back\\slash",
            b"new\nline \xff\xfe",
            "\u{200b}bidi\u{202e}".as_bytes(),
        ] {
            assert_eq!(from_printable(&printable(name)).as_deref(), Some(name));
        }
        for malformed in ["a\\", "a\\x4", "a\\xg0", "a\\n"] {
            assert_eq!(from_printable(malformed), None, "{malformed}");
        }
    }

    #[test]
    fn printable_names_stay_as_they_are() {
        assert_eq!(printable(b"/dir/file.db"), "/dir/file.db");
        assert_eq!(
            printable("/caf\u{e9}/\u{65e5}\u{672c}".as_bytes()),
            "/caf\u{e9}/\u{65e5}\u{672c}"
        );
    }

    #[test]
    fn control_characters_and_invalid_bytes_are_escaped() {
        assert_eq!(
            printable(b"x\n2026 #999 shutdown"),
            "x\\x0a2026 #999 shutdown"
        );
        assert_eq!(printable(b"\x1b[31mred"), "\\x1b[31mred");
        assert_eq!(printable(b"bad\xff\xfename"), "bad\\xff\\xfename");
        // C1 controls (a one-byte CSI to some terminals) are control too.
        assert_eq!(printable("a\u{9b}b".as_bytes()), "a\\xc2\\x9bb");
        // Invisible characters would make two names show as one.
        for invisible in [
            '\u{200b}',
            '\u{feff}',
            '\u{061c}',
            '\u{2060}',
            '\u{fe0f}',
            '\u{e0041}',
        ] {
            let name = format!("same{invisible}.db");
            assert_ne!(printable(name.as_bytes()), "same.db");
            assert!(printable(name.as_bytes()).contains("\\x"), "{invisible:?}");
        }
        // A right-to-left override would show the name in another order.
        assert_eq!(
            printable("evil\u{202e}gpj.exe".as_bytes()),
            "evil\\xe2\\x80\\xaegpj.exe"
        );
    }

    #[test]
    fn escaping_is_lossless() {
        // A name that is literally `\xff` differs from the byte 0xff.
        assert_eq!(printable(b"\\xff"), "\\\\xff");
        assert_ne!(printable(b"\\xff"), printable(b"\xff"));
        assert_ne!(printable(b"a\xff"), printable("a\u{fffd}".as_bytes()));
    }
}
