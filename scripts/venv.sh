# Sourced by scripts/run and scripts/test from the repository root: makes .venv
# and installs the project into it (editable, with the test extras) whenever
# setup.cfg or pyproject.toml changed since the last install.
if [ ! -x .venv/bin/python ]; then
    echo "Creating .venv" >&2
    python3 -m venv .venv
fi
_want="$(sha256sum setup.cfg pyproject.toml 2>/dev/null || true)"  # pyproject.toml is optional
if [ "$(cat .venv/.dicomweb-couch-installed 2>/dev/null)" != "$_want" ]; then
    echo "Installing dicomweb_couch into .venv (pip install -e '.[test]')" >&2
    .venv/bin/python -m pip install --quiet --disable-pip-version-check -e '.[test]'
    echo "$_want" > .venv/.dicomweb-couch-installed
fi
unset _want
