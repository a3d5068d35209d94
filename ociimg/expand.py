"""Dockerfile word expansion: quotes, escapes and ``$VAR`` forms, not a shell.

The rules are the Dockerfile reference's "Environment replacement" section, with
BuildKit's lexer (``frontend/dockerfile/shell/lex.go``) deciding where it is vague:

* ``$V`` ``${V}`` ``${V:-w}`` ``${V-w}`` ``${V:+w}`` ``${V+w}`` ``${V:?msg}`` ``${V?msg}``
  and the pattern forms ``${V#p}`` ``${V##p}`` ``${V%p}`` ``${V%%p}`` ``${V/p/r}``
  ``${V//p/r}``; an unset variable expands to "" (Docker), ``${}`` is an error;
* single quotes are literal (no escapes inside), double quotes let ``$`` expand and
  escape only ``"`` ``$`` and the escape char; outside quotes the escape char makes
  the next char literal and is dropped at the end of a word;
* word splitting (:func:`expand_words`) happens on unquoted whitespace *after*
  expansion, so an unquoted ``$V`` holding spaces gives several words.

``parse_words`` / ``split_key_values`` are the parser's quote-aware splits that keep the
text verbatim (BuildKit's ``parseWords``), so a syntax error is reported at parse time
and expansion still happens later, with the env of the instruction's stage.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field

from ociimg.errors import BuildError

__all__ = ["ExpandError", "expand", "expand_words", "expand_heredoc", "parse_words",
           "split_key_values", "parse_key_values", "parse_arg_decls"]

_SPECIAL_PARAMS = frozenset("@*#?-$!0")


class ExpandError(BuildError):
    """A word cannot be expanded (``${}``, an unterminated quote, ``${V:?msg}``)."""


@dataclass
class _Words:
    """Words of one expansion: unquoted whitespace separates, quoted text never does."""

    word: str = ""
    words: list[str] = field(default_factory=list)

    def add(self, text: str) -> None:
        for ch in text:
            if ch.isspace():
                self._flush()
            else:
                self.word += ch

    def add_raw(self, text: str) -> None:
        self.word += text

    def _flush(self) -> None:
        if self.word:
            self.words.append(self.word)
            self.word = ""

    def result(self) -> list[str]:
        self._flush()
        return self.words


MAX_NESTING = 64


class _Lexer:
    def __init__(self, text: str, env: Mapping[str, str], escape: str, *,
                 quotes: bool = True) -> None:
        self.text = text
        self.pos = 0
        self.env = env
        self.escape = escape
        self.quotes = quotes  # False: heredoc bodies, where quotes are plain chars
        self.depth = 0

    def peek(self) -> str:
        return self.text[self.pos] if self.pos < len(self.text) else ""

    def next(self) -> str:
        ch = self.peek()
        self.pos += 1 if ch else 0
        return ch

    def word(self, stop: str = "", raw_escapes: bool = False) -> tuple[str, list[str]]:
        """Process up to ``stop`` (consumed) or the end: (text, split words)."""
        if not stop:
            return self._word(stop, raw_escapes)
        # ${a:-${b:-...}} recurses once a level: a hostile Containerfile's depth is
        # bounded here, as a one-line error, never Python's RecursionError.
        self.depth += 1
        if self.depth > MAX_NESTING:
            raise ExpandError(f"substitutions nested more than {MAX_NESTING} deep")
        try:
            return self._word(stop, raw_escapes)
        finally:
            self.depth -= 1

    def _word(self, stop: str, raw_escapes: bool) -> tuple[str, list[str]]:
        out: list[str] = []
        words = _Words()
        while (ch := self.peek()):
            if stop and ch == stop:
                self.next()
                return "".join(out), words.result()
            if ch == "$":
                value = self.dollar()
                out.append(value)
                words.add(value)
            elif self.quotes and ch in "'\"":
                value = self.single_quote() if ch == "'" else self.double_quote()
                out.append(value)
                words.add_raw(value)
            elif ch == self.escape and not self.quotes:
                out.append(self.heredoc_escape())
                words.add_raw(out[-1])
            elif ch == self.escape:
                self.next()
                if raw_escapes:
                    out.append(ch)
                    words.add_raw(ch)
                escaped = self.next()
                if not escaped:
                    break
                out.append(escaped)
                words.add_raw(escaped)
            else:
                out.append(self.next())
                words.add(ch)
        if stop:
            raise ExpandError(f"unexpected end of statement while looking for matching {stop}")
        return "".join(out), words.result()

    def heredoc_escape(self) -> str:
        """sh's here-document rule: the escape char quotes only ``$``, itself and a newline."""
        self.next()
        following = self.peek()
        if following in ("$", self.escape):
            return self.next()
        if following == "\n":
            self.next()
            return ""
        return self.escape

    def single_quote(self) -> str:
        self.next()
        end = self.text.find("'", self.pos)
        if end < 0:
            raise ExpandError("unexpected end of statement while looking for matching single-quote")
        value, self.pos = self.text[self.pos:end], end + 1
        return value

    def double_quote(self) -> str:
        self.next()
        out: list[str] = []
        while True:
            ch = self.peek()
            if not ch:
                raise ExpandError("unexpected end of statement while looking for matching "
                                  "double-quote")
            if ch == '"':
                self.next()
                return "".join(out)
            if ch == "$":
                out.append(self.dollar())
                continue
            self.next()
            if ch == self.escape:
                following = self.peek()
                if not following:
                    continue
                if following in ('"', "$", self.escape):
                    ch = self.next()
            out.append(ch)

    def name(self) -> str:
        start = self.pos
        ch = self.peek()
        if ch.isdecimal():
            while self.peek().isdecimal():
                self.next()
            return self.text[start:self.pos]
        if ch and ch in _SPECIAL_PARAMS:
            return self.next()
        while (ch := self.peek()) and (ch.isalpha() or ch.isdecimal() or ch == "_"):
            self.next()
        return self.text[start:self.pos]

    def dollar(self) -> str:
        self.next()
        if self.peek() != "{":
            name = self.name()
            return self.env.get(name, "") if name else "$"
        self.next()
        first = self.peek()
        if not first:
            raise ExpandError("syntax error: missing '}'")
        if first in "{}:":
            raise ExpandError("syntax error: bad substitution")
        name = self.name()
        op = self.next()
        if not op:
            raise ExpandError("syntax error: missing '}'")
        if op == "}":
            return self.env.get(name, "")
        if op == "/":
            return self.replace(name)
        null_is_unset = op == ":"
        if null_is_unset:
            op = self.next()
        if op not in ("-", "+", "?", "#", "%"):
            modifier = (":" if null_is_unset else "") + op
            raise ExpandError(f"unsupported modifier ({modifier}) in substitution")
        try:
            word, _ = self.word("}", raw_escapes=op in "#%")
        except ExpandError:
            if not self.peek():
                raise ExpandError("syntax error: missing '}'") from None
            raise
        return self.modify(name, op, word, null_is_unset)

    def modify(self, name: str, op: str, word: str, null_is_unset: bool) -> str:
        value = self.env.get(name)
        unset = value is None or (null_is_unset and value == "")
        if op == "-":
            return word if unset else str(value)
        if op == "+":
            return "" if unset else word
        if op == "?":
            if unset:
                why = "unset" if value is None else "empty"
                raise ExpandError(f"{name}: {word or 'is not allowed to be ' + why}")
            return str(value)
        greedy = word.startswith(op)
        return _trim(value or "", word[1:] if greedy else word, suffix=op == "%", greedy=greedy)

    def replace(self, name: str) -> str:
        replace_all = self.peek() == "/"
        if replace_all:
            self.next()
        try:
            pattern, _ = self.word("/", raw_escapes=True)
            replacement, _ = self.word("}", raw_escapes=True)
        except ExpandError:
            if not self.peek():
                raise ExpandError("syntax error: missing '}'") from None
            raise
        regex = _shell_pattern(pattern)
        value = self.env.get(name, "")
        return regex.sub(lambda _m: replacement, value, count=0 if replace_all else 1)


def _shell_pattern(pattern: str) -> re.Pattern[str]:
    """A ``${V/pattern/...}`` pattern: ``*`` any string, ``?`` one char, ``\\`` escapes.
    Stars but the last are atomic and lazy (fullmatch_regex): the leftmost match keeps
    the longest reach for the last, greedy one, so each start still finds its longest
    match, without the k-star backtracking (``${V/*a*a*a*a*a*ab/x}`` on 100 chars)."""
    return re.compile(fullmatch_regex(_shell_tokens(pattern, ".*"), ".*"), re.DOTALL)


def _shell_tokens(pattern: str, star: str) -> list[str]:
    out: list[str] = []
    chars = iter(range(len(pattern)))
    for i in chars:
        ch = pattern[i]
        if ch == "*":
            out.append(star)
        elif ch == "?":
            out.append(".")
        elif ch == "\\" and i + 1 < len(pattern):
            nxt = pattern[i + 1]
            next(chars)
            if nxt not in "}/*?\\":
                raise ExpandError(f"invalid pattern ({pattern}) in substitution: "
                                  f"invalid escape '\\{nxt}'")
            out.append(re.escape(nxt))
        else:
            out.append(re.escape(ch))
    return out


def fullmatch_regex(tokens: list[str], star: str) -> str:
    """Tokens (``star`` for a star, one-char regexes else) joined for a fullmatch where
    a star takes any char of the string: a star run followed by another star is atomic
    and lazy (its leftmost match is the right one, fnmatch's rule), so k stars cost a
    linear scan each instead of len(string)**k backtracking."""
    out: list[str] = []
    stars = [i for i, t in enumerate(tokens) if t == star]
    out.extend(tokens[:stars[0]] if stars else tokens)
    for n, i in enumerate(stars):
        end = stars[n + 1] if n + 1 < len(stars) else len(tokens)
        seg = "".join(tokens[i + 1:end])
        out.append(f"(?>{star}?{seg})" if end < len(tokens) and seg else star + seg)
    return "".join(out)


def _trim(value: str, pattern: str, *, suffix: bool, greedy: bool) -> str:
    """POSIX ``#``/``##`` (prefix) and ``%``/``%%`` (suffix): shortest or longest match."""
    regex = re.compile(fullmatch_regex(_shell_tokens(pattern, ".*"), ".*"), re.DOTALL)
    cuts = range(len(value) + 1)
    if suffix:
        order = cuts if greedy else reversed(cuts)
        for i in order:
            if regex.fullmatch(value, i):
                return value[:i]
        return value
    order = reversed(cuts) if greedy else cuts
    for i in order:
        if regex.fullmatch(value, 0, i):
            return value[i:]
    return value


def expand(word: str, env: Mapping[str, str], *, escape: str = "\\") -> str:
    """One word, quotes and escapes processed, variables expanded, spaces kept."""
    return _Lexer(word, env, escape).word()[0]


def expand_words(text: str, env: Mapping[str, str], *, escape: str = "\\") -> list[str]:
    """Words of ``text`` split on unquoted whitespace after expansion (``COPY $SRC /d``)."""
    return _Lexer(text, env, escape).word()[1]


def expand_heredoc(body: str, env: Mapping[str, str], *, escape: str = "\\") -> str:
    """A heredoc body with an unquoted delimiter (``COPY <<EOF``): ``$`` forms expand.

    Quotes are plain text and the escape char quotes only ``$``, itself and a newline,
    as in sh's here-documents (POSIX "Here-Document"); ``<<'EOF'`` bodies are not
    expanded at all.
    """
    return _Lexer(body, env, escape, quotes=False).word()[0]


def parse_words(text: str, escape: str = "\\") -> list[str]:
    """Split on whitespace outside quotes, keeping quotes and escapes verbatim.

    An escape char outside quotes keeps the char after it in the word (even a space or
    a quote); inside single quotes nothing is escaped. BuildKit's ``parseWords``.
    """
    words: list[str] = []
    word: list[str] = []
    started = False
    quote = ""
    i = 0
    while i < len(text):
        ch = text[i]
        at_end = i + 1 == len(text)
        if not quote and ch.isspace():
            if started:
                words.append("".join(word))
                word, started = [], False
        elif ch == escape and quote != "'":
            if at_end:
                break  # an escape char ending the text is dropped
            word += [ch, text[i + 1]]
            started = True
            i += 1
        else:
            if not quote and ch in "'\"":
                quote = ch
            elif quote and ch == quote:
                quote = ""
            word.append(ch)
            started = True
        i += 1
    if started:
        words.append("".join(word))
    return words


def split_key_values(text: str, keyword: str, escape: str = "\\") -> list[tuple[str, str]]:
    """ENV/LABEL operands unexpanded: ``k=v k2="v 2"`` or the legacy ``k value``.

    The legacy form is chosen when the first word has no ``=`` (reference "ENV": "the
    value will be everything after the first whitespace").
    """
    words = parse_words(text, escape)
    if not words:
        raise ExpandError(f"{keyword} requires at least one argument")
    if "=" not in words[0]:
        parts = text.strip().split(None, 1)
        if len(parts) < 2:
            raise ExpandError(f"{keyword} must have two arguments")
        return [(parts[0], parts[1])]
    pairs = []
    for word in words:
        if "=" not in word:
            raise ExpandError(f"Syntax error - can't find = in {word!r}. "
                              "Must be of the form: name=value")
        key, value = word.split("=", 1)
        if not key:
            raise ExpandError(f"{keyword} names can not be blank")
        pairs.append((key, value))
    return pairs


def parse_key_values(args: str, env: Mapping[str, str], escape: str = "\\",
                     keyword: str = "ENV") -> list[tuple[str, str]]:
    """ENV/LABEL pairs with key and value expanded, every word against the same ``env``.

    ``ENV a=x b=$a`` gives b the *old* a (reference "Environment replacement").
    """
    return [(expand(k, env, escape=escape), expand(v, env, escape=escape))
            for k, v in split_key_values(args, keyword, escape)]


def parse_arg_decls(args: str, env: Mapping[str, str] | None = None,
                    escape: str = "\\") -> list[tuple[str, str | None]]:
    """ARG operands: ``name`` (no default: None) or ``name=default``, several per line.

    With ``env`` the names and defaults are expanded (``ARG b=$a``); without, they are
    returned verbatim (the parser's validation pass).
    """
    decls: list[tuple[str, str | None]] = []
    for word in parse_words(args, escape):
        key, sep, value = word.partition("=")
        if env is not None:
            key = expand(key, env, escape=escape)
            value = expand(value, env, escape=escape)
        if not key:
            raise ExpandError("ARG names can not be blank")
        decls.append((key, value if sep else None))
    if not decls:
        raise ExpandError("ARG requires at least one argument")
    return decls
