import sys
from ddpm_course import cli


def run_shell(argv, monkeypatch, capsys=None) -> tuple[int, str]:
    "Run `ddpm_course ARGV` as the console script does (`main()` reading sys.argv), in this process: (exit code, what it printed)"
    monkeypatch.setattr(sys, 'argv', ['ddpm_course', *map(str, argv)])
    code, msg = 0, ''
    try: cli.main()
    except SystemExit as e:                                      # sys.exit('message') prints it and exits 1, as the interpreter would
        if isinstance(e.code, str): code, msg = 1, e.code + '\n'
        else: code = e.code or 0
    out = capsys.readouterr() if capsys is not None else None
    return code, (out.out + out.err if out else '') + msg
