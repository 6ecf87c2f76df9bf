"""Library errors name the value or path, not a CLI flag (the CLI adds its flags; see test_runs_cli)."""

from __future__ import annotations

from pathlib import Path

import pytest

from qsight.errors import BadInputError
from qsight.runs.archive import ArchiveTargetError, check_target
from qsight.runs.prune import parse_age, parse_keep


def test_prune_parsers_name_the_value() -> None:
    with pytest.raises(BadInputError) as age:
        parse_age("30 days")
    with pytest.raises(BadInputError) as keep:
        parse_keep("best,worst")
    assert str(age.value).startswith("'30 days': expected an age")
    assert str(keep.value).startswith("'best,worst': expected a comma list of best, last")
    assert "--" not in str(age.value) + str(keep.value)


def test_archive_target_errors_name_the_path(tmp_path: Path) -> None:
    cases = [(tmp_path / "a.zip", "must end in .tar.gz"), (tmp_path / "no" / "a.tar.gz", "does not exist")]
    for path, needle in cases:
        with pytest.raises(ArchiveTargetError, match=needle) as exc:
            check_target(path, force=False)
        assert str(exc.value).startswith(str(path)) and not exc.value.exists and "--" not in str(exc.value)
    existing = tmp_path / "a.tar.gz"
    existing.write_bytes(b"")
    with pytest.raises(ArchiveTargetError, match="the file exists") as exc:
        check_target(existing, force=False)
    assert exc.value.exists and "--force" not in str(exc.value)
    check_target(existing, force=True)
