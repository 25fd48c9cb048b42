//! Tokeniser: turns the (already unwrapped) expression into tokens that carry
//! byte offsets into the ORIGINAL input. Never slices at a non-char boundary:
//! it walks `char_indices` only.

use crate::CalcError;

/// One lexical token.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Tok {
    /// Numeric literal, underscores removed, e.g. "1000", "0.1", "1e-3".
    Num(String),
    /// Identifier: unit, function, constant or keyword.
    Name(String),
    Plus,
    Minus,
    Star,
    Slash,
    Percent,
    /// `^` or `**`.
    Caret,
    /// Postfix factorial `!`.
    Bang,
    LParen,
    RParen,
    Comma,
    /// `->` conversion arrow.
    Arrow,
    /// Superscript exponent `²` / `³`.
    Sup(u8),
}

/// A token with its byte offset in the original input.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Token {
    pub tok: Tok,
    pub pos: usize,
}

fn is_name_start(c: char) -> bool {
    c.is_alphabetic() || c == '_' || c == '°'
}

fn is_name_continue(c: char) -> bool {
    c.is_alphabetic() || c.is_ascii_digit() || c == '_'
}

/// Tokenise `src`; `offset` is the byte offset of `src` inside the original input.
pub(crate) fn lex(src: &str, offset: usize) -> Result<Vec<Token>, CalcError> {
    let chars: Vec<(usize, char)> = src.char_indices().collect();
    let mut out = Vec::new();
    let mut i = 0;
    while let Some(&(at, c)) = chars.get(i) {
        let pos = offset + at;
        let next = chars.get(i + 1).map(|&(_, n)| n);
        let simple = match c {
            '+' => Some(Tok::Plus),
            '-' | '−' if next == Some('>') => {
                i += 1;
                Some(Tok::Arrow)
            }
            '-' | '−' => Some(Tok::Minus),
            '*' if next == Some('*') => {
                i += 1;
                Some(Tok::Caret)
            }
            '*' | '×' | '·' | '⋅' => Some(Tok::Star),
            '/' | '÷' => Some(Tok::Slash),
            '%' => Some(Tok::Percent),
            '^' => Some(Tok::Caret),
            '!' => Some(Tok::Bang),
            '(' => Some(Tok::LParen),
            ')' => Some(Tok::RParen),
            ',' => Some(Tok::Comma),
            '²' => Some(Tok::Sup(2)),
            '³' => Some(Tok::Sup(3)),
            _ => None,
        };
        if let Some(tok) = simple {
            out.push(Token { tok, pos });
            i += 1;
            continue;
        }
        if c.is_whitespace() {
            i += 1;
        } else if c.is_ascii_digit() || (c == '.' && next.is_some_and(|n| n.is_ascii_digit())) {
            let (text, end) = lex_number(&chars, i);
            out.push(Token {
                tok: Tok::Num(text),
                pos,
            });
            i = end;
        } else if is_name_start(c) {
            let mut name = String::new();
            name.push(c);
            i += 1;
            while let Some(&(_, n)) = chars.get(i) {
                if !is_name_continue(n) {
                    break;
                }
                name.push(n);
                i += 1;
            }
            out.push(Token {
                tok: Tok::Name(name),
                pos,
            });
        } else {
            return Err(CalcError::new(pos, format!("unexpected character {c:?}")));
        }
    }
    Ok(spelled_operators(out))
}

/// Operators written as words, longest phrase first; each becomes the
/// operator at the position of its first word.
const SPELLED: &[(&[&str], Tok)] = &[
    (&["to", "the", "power", "of"], Tok::Caret),
    (&["raised", "to", "the", "power", "of"], Tok::Caret),
    (&["raised", "to"], Tok::Caret),
    (&["multiplied", "by"], Tok::Star),
    (&["divided", "by"], Tok::Slash),
    (&["plus"], Tok::Plus),
    (&["minus"], Tok::Minus),
    (&["times"], Tok::Star),
    (&["squared"], Tok::Sup(2)),
    (&["cubed"], Tok::Sup(3)),
    (&["mod"], Tok::Percent),
    (&["modulo"], Tok::Percent),
];

/// Replace spelled-out operators ("2 to the power of 10", "7 divided by 2")
/// by their symbols. Only whole names match, case-insensitively.
fn spelled_operators(tokens: Vec<Token>) -> Vec<Token> {
    let word = |t: Option<&Token>| match t.map(|t| &t.tok) {
        Some(Tok::Name(n)) => Some(n.to_ascii_lowercase()),
        _ => None,
    };
    let mut out = Vec::with_capacity(tokens.len());
    let mut i = 0;
    while i < tokens.len() {
        let phrase = SPELLED.iter().find(|(words, _)| {
            words
                .iter()
                .enumerate()
                .all(|(k, w)| word(tokens.get(i + k)).as_deref() == Some(*w))
        });
        match phrase {
            Some((words, tok)) => {
                out.push(Token {
                    tok: tok.clone(),
                    pos: tokens[i].pos,
                });
                i += words.len();
            }
            None => {
                out.push(tokens[i].clone());
                i += 1;
            }
        }
    }
    out
}

/// Lex a number starting at `chars[start]`; returns the cleaned text and the
/// index one past its end. Grammar: digits[_digits] [. digits] [e[+-]digits].
fn lex_number(chars: &[(usize, char)], start: usize) -> (String, usize) {
    let at = |k: usize| chars.get(k).map(|&(_, c)| c);
    let mut text = String::new();
    let mut i = start;
    let mut seen_dot = false;
    while let Some(c) = at(i) {
        if c.is_ascii_digit() {
            text.push(c);
        } else if c == '_' && at(i + 1).is_some_and(|n| n.is_ascii_digit()) && !text.is_empty() {
            // digit separator: skip
        } else if c == '.' && !seen_dot && at(i + 1).is_some_and(|n| n.is_ascii_digit()) {
            seen_dot = true;
            text.push('.');
        } else if c == '.' && !seen_dot && at(i + 1).is_none_or(|n| n != '.') {
            // trailing dot "5." – accept as part of the number
            seen_dot = true;
        } else {
            break;
        }
        i += 1;
    }
    // exponent: only when followed by digits (so "2e" is 2 * e, "2 e" likewise)
    if let Some('e' | 'E') = at(i) {
        let (sign_len, sign) = match at(i + 1) {
            Some('+') => (1, "+"),
            Some('-') | Some('−') => (1, "-"),
            _ => (0, ""),
        };
        if at(i + 1 + sign_len).is_some_and(|c| c.is_ascii_digit()) {
            text.push('e');
            text.push_str(sign);
            i += 1 + sign_len;
            while let Some(c) = at(i) {
                if !c.is_ascii_digit() {
                    break;
                }
                text.push(c);
                i += 1;
            }
        }
    }
    (text, i)
}
