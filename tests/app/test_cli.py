"""The CLI lists every command of the contract; unavailable commands say so and exit non-zero."""
import subprocess
import sys

from app.cli import COMMANDS, main

CONTRACT = ["demo", "replay", "record", "devices", "gui", "eval-tracking", "lpdc", "deform", "match",
            "compress", "decompress", "train", "bench"]


def test_help_lists_every_contract_command():
    out = subprocess.run([sys.executable, "-m", "app.cli", "--help"], capture_output=True, text=True)
    assert out.returncode == 0
    for name in CONTRACT:
        assert name in out.stdout
    assert {c.name for c in COMMANDS} >= set(CONTRACT)


def test_unavailable_commands_exit_nonzero(capsys):
    for c in COMMANDS:
        if c.module is None:
            assert main([c.name]) != 0
            assert "not available yet" in capsys.readouterr().err
