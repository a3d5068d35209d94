""".containerignore / .dockerignore table (ociimg.build.ignore)."""

from __future__ import annotations

import pytest

from ociimg.build.ignore import IgnoreRules
from ociimg.errors import BuildSyntaxError

# Dockerfile reference ".dockerignore file": Go filepath.Match rules plus "**" (any number
# of directories, zero included); lines cleaned (filepath.Clean) and a leading "/"
# dropped; "#" starts a comment only in column 0; "!" makes an exception and the last
# matching line wins; a directory rule covers what is inside it. Rows marked "trap 11"
# are the docker/cli#2919, #2847, moby#30018 cases (anchors-next.md §1.3).
ROWS = [
    ("*.go", "a.go", True),
    ("*.go", "d/a.go", False),               # * does not cross /
    ("**/*.go", "d/e/a.go", True),
    ("**/*.go", "a.go", True),               # ** matches zero dirs
    ("d", "d", True),
    ("d", "d/x/y", True),                    # a dir rule covers its contents
    ("d/", "d/x", True),                     # trailing / cleaned away
    ("/d", "d/x", True),                     # leading / dropped
    ("./d", "d/x", True),
    ("a/../b", "b", True),                   # cleaned
    ("a/**", "a/x/y", True),
    ("a/**", "a", False),
    ("**", "anything/at/all", True),
    ("**/foo", "foo", True),
    ("**/foo", "x/y/foo/bar", True),
    ("a?b", "axb", True),
    ("a?b", "a/b", False),
    ("[a-c].txt", "b.txt", True),
    ("[a-c].txt", "d.txt", False),
    ("[^a].txt", "a.txt", False),
    ("\\*.txt", "*.txt", True),              # \ escapes
    ("\\*.txt", "x.txt", False),
    ("file.txt", "fileXtxt", False),         # . is literal
    ("#comment", "#comment", False),
    ("  #x", "#x", True),                    # not in column 0: a pattern
    ("*\n!README.md", "README.md", False),
    ("*\n!README.md", "main.go", True),
    ("!a\na", "a", True),                    # last rule wins
    ("a\n!a", "a", False),
    ("*\n!**/*.py", "d/e/x.py", False),       # trap 11: ** exception below a *
    ("*\n!**/*.py", "d/e/x.go", True),
    ("*\n!dir/*/", "dir/sub/file", False),    # trap 11: trailing / in an exception
    ("docs\n!docs/keep.md", "docs/keep.md", False),
    ("docs\n!docs/keep.md", "docs/other.md", True),
    ("docs\n!docs", "docs/x", False),
    ("\n\n  \n", "a", False),                # blank lines
]


@pytest.mark.parametrize(("rules", "path", "excluded"), ROWS)
def test_excluded(rules: str, path: str, excluded: bool) -> None:
    assert IgnoreRules.parse(rules).excluded(path) is excluded


# A walker skips an excluded dir only if no exception could match below it (trap 11:
# moby's prefix check missed "!**/*.py").
MAY_CONTAIN_ROWS = [
    ("*\n!**/*.py", "d", True),
    ("*\n!**/*.py", "d/e", True),
    ("d", "d", False),                       # no exceptions at all
    ("d\n!e/x", "d", False),
    ("d\n!d/keep", "d", True),
    ("d\n!d/keep", "d/sub", False),
    ("*\n!*/keep", "anything", True),
    ("*\n!d*/k", "other", False),
]


@pytest.mark.parametrize(("rules", "path", "expected"), MAY_CONTAIN_ROWS)
def test_may_contain_included(rules: str, path: str, expected: bool) -> None:
    assert IgnoreRules.parse(rules).may_contain_included(path) is expected


def test_bare_exclamation_is_an_error() -> None:
    with pytest.raises(BuildSyntaxError, match=r"\.dockerignore:2: illegal exclusion pattern"):
        IgnoreRules.parse("a\n!\n", ".dockerignore")
