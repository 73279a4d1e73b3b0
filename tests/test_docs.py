"""The README and docs/ say what the code does: docs/configuration.md's tables are checked against template.yaml and
imgsim.settings, and every link between the documents resolves (files and #anchors).

docs/configuration.md keeps four tables, each under its own heading (the first cell of a row is the name in
backticks):

- "Template parameters": exactly template.yaml's Parameters; the default column is the template's Default in
  backticks (``required`` when it has none), and the allowed column names every AllowedValue, MinValue (``≥ n``)
  and MaxValue (``≤ n``).
- "Variables imgsim reads": exactly ``imgsim.settings.VARIABLES``. A default written as a backticked literal must
  load as the default (setting the variable to it changes nothing); a default that is not a literal starts with
  "unset". The template column is what the template gives the functions (``render_template_value``).
- "Variables the template sets for powertools": the rest of the functions' environment, with the same template
  column.
- "Build and tool variables": a backticked default of a variable the Makefiles define with ``?=`` is that default.
"""

from __future__ import annotations

import re
from pathlib import Path
from urllib.parse import unquote

import pytest
from imgsim import settings

REPO = Path(__file__).resolve().parents[1]
CONFIGURATION = REPO / "docs" / "configuration.md"
FUNCTIONS = ("IndexFunction", "SearchFunction")
DOCUMENTS = sorted([REPO / "README.md", *(REPO / "docs").glob("*.md")])


# -- reading ---------------------------------------------------------------------------------------------------------


def load_template() -> dict:
    # SAM CLI's reader: CloudFormation's short tags (!Ref, !If) in their long forms.
    from samcli.yamlhelper import yaml_parse

    return yaml_parse((REPO / "template.yaml").read_text())


def table(markdown: str, heading: str) -> dict[str, list[str]]:
    """The first table after ``## heading``: {name in the first cell: the row's cells}."""
    lines = markdown.splitlines()
    try:
        start = lines.index(f"## {heading}")
    except ValueError:
        pytest.fail(f"docs/configuration.md has no '## {heading}' section")
    rows: dict[str, list[str]] = {}
    in_table = False
    for line in lines[start + 1:]:
        if line.startswith("## "):
            break
        if not line.startswith("|"):
            if in_table:
                break
            continue
        cells = [cell.strip() for cell in re.split(r"(?<!\\)\|", line.strip())[1:-1]]
        if not in_table:  # the header row, then its separator
            in_table = True
            continue
        if set(cells[0]) <= {"-", " ", ":"}:
            continue
        names = re.findall(r"`([^`]+)`", cells[0])
        assert names, f"{heading}: a row without a `name` in its first cell: {line}"
        for name in names:  # a row may document several variables that share everything
            assert name not in rows, f"{heading}: {name} appears twice"
            rows[name] = cells
    assert rows, f"no table under '## {heading}'"
    return rows


def function_environment(template: dict) -> dict[str, dict[str, object]]:
    """{variable: {function: value}} for every variable the template gives a function (Globals, then its own)."""
    shared = template["Globals"]["Function"]["Environment"]["Variables"]
    out: dict[str, dict[str, object]] = {}
    for function in FUNCTIONS:
        own = template["Resources"][function]["Properties"].get("Environment", {}).get("Variables", {})
        for name, value in {**shared, **own}.items():
            out.setdefault(name, {})[function] = value
    return out


def render_value(value: object) -> str:
    if isinstance(value, dict) and "Ref" in value:
        return f"`!Ref {value['Ref']}`"
    if isinstance(value, dict) and "Fn::If" in value:
        condition, yes, no = value["Fn::If"]
        return f"`!If [{condition}, {yes}, {no}]`"
    return f"`{value}`" if str(value) != "" else '`""`'


def render_template_value(values: dict[str, object]) -> str:
    """The template column: the value when both functions get the same, else each function's, in order."""
    if not values:
        return "not set"
    rendered = {function: render_value(value) for function, value in values.items()}
    if len(rendered) == len(FUNCTIONS) and len(set(rendered.values())) == 1:
        return next(iter(rendered.values()))
    return ", ".join(f"{function} {rendered[function]}" for function in FUNCTIONS if function in rendered)


def headings(markdown: str) -> set[str]:
    """GitHub's anchors of a document's headings (lower case, punctuation dropped, spaces to '-', repeats -1, -2)."""
    seen: dict[str, int] = {}
    anchors = set()
    in_code = False
    for line in markdown.splitlines():
        if line.startswith("```"):
            in_code = not in_code
        match = None if in_code else re.match(r"^#{1,6}\s+(.*?)\s*#*\s*$", line)
        if not match:
            continue
        text = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", match.group(1))  # a link in a heading: its text
        slug = re.sub(r"[^\w\- ]", "", text.lower()).replace(" ", "-")
        count = seen.get(slug, 0)
        seen[slug] = count + 1
        anchors.add(slug if count == 0 else f"{slug}-{count}")
    return anchors


def links(markdown: str) -> list[str]:
    """Targets of inline links and images outside code blocks and code spans."""
    text = re.sub(r"```.*?```", "", markdown, flags=re.DOTALL)
    text = re.sub(r"`[^`\n]*`", "", text)
    return re.findall(r"!?\[[^\]]*\]\(([^)\s]+)(?:\s+\"[^\"]*\")?\)", text)


# -- configuration.md against the template and the settings module ----------------------------------------------------


def test_the_parameter_table_is_the_templates_parameters():
    parameters = load_template()["Parameters"]
    rows = table(CONFIGURATION.read_text(), "Template parameters")
    assert set(rows) == set(parameters), (
        f"missing: {sorted(set(parameters) - set(rows))}, not in the template: {sorted(set(rows) - set(parameters))}")
    for name, spec in parameters.items():
        _, default, allowed, *_ = rows[name]
        expected = "required" if "Default" not in spec else render_value(spec["Default"])
        assert default == expected, f"{name}: default {default!r}, the template says {expected!r}"
        for value in spec.get("AllowedValues", []):
            assert f"`{value}`" in allowed, f"{name}: allowed column lacks `{value}`"
        if "MinValue" in spec:
            assert f"≥ {spec['MinValue']}" in allowed, f"{name}: allowed column lacks ≥ {spec['MinValue']}"
        if "MaxValue" in spec:
            assert f"≤ {spec['MaxValue']}" in allowed, f"{name}: allowed column lacks ≤ {spec['MaxValue']}"


def test_the_variable_table_is_what_the_settings_module_reads():
    rows = table(CONFIGURATION.read_text(), "Variables imgsim reads")
    assert set(rows) == set(settings.VARIABLES), (
        f"missing: {sorted(set(settings.VARIABLES) - set(rows))}, "
        f"not read by imgsim.settings: {sorted(set(rows) - set(settings.VARIABLES))}")


def test_every_literal_default_is_the_settings_default():
    rows = table(CONFIGURATION.read_text(), "Variables imgsim reads")
    defaults = settings.load({})
    literal = 0
    for name, (_, default, *_) in rows.items():
        match = re.fullmatch(r"`([^`]*)`", default)
        if match is None:
            assert default.startswith("unset"), f"{name}: a default is a `literal` or starts with 'unset': {default!r}"
            continue
        literal += 1
        assert settings.load({name: match.group(1)}) == defaults, (
            f"{name}={match.group(1)} is not the default docs/configuration.md says it is")
    assert literal >= 20, "the defaults should be written as literals wherever there is one"


@pytest.mark.parametrize("heading", ["Variables imgsim reads", "Variables the template sets for powertools"])
def test_the_template_column_is_what_the_template_gives_the_functions(heading):
    environment = function_environment(load_template())
    rows = table(CONFIGURATION.read_text(), heading)
    for name, cells in rows.items():
        expected = render_template_value(environment.get(name, {}))
        assert cells[2] == expected, f"{name}: template column {cells[2]!r}, template.yaml gives {expected!r}"


def test_every_variable_the_template_sets_is_documented():
    environment = function_environment(load_template())
    imgsim = set(table(CONFIGURATION.read_text(), "Variables imgsim reads"))
    others = set(table(CONFIGURATION.read_text(), "Variables the template sets for powertools"))
    assert set(environment) - imgsim == others, (
        f"undocumented: {sorted(set(environment) - imgsim - others)}, not set by the template: "
        f"{sorted(others - set(environment))}")


def test_build_variables_have_the_makefiles_defaults():
    """The row's "read by" column says which Makefile: the layer's when it names it, else the project's (`make ...`)."""
    rows = table(CONFIGURATION.read_text(), "Build and tool variables")
    defined: dict[str, dict[str, str]] = {}
    for makefile in ("Makefile", "layers/shared/Makefile"):
        found = re.findall(r"^([A-Z_]+) \?= ?(.*)$", (REPO / makefile).read_text(), re.MULTILINE)
        defined[makefile] = {name: value.strip() for name, value in found}
    checked = 0
    for name, (_, default, read_by, *_) in rows.items():
        makefile = "layers/shared/Makefile" if "layers/shared/Makefile" in read_by else "Makefile"
        value = defined[makefile].get(name)
        match = re.fullmatch(r"`([^`]*)`", default)
        if match and value is not None and "$" not in value:
            checked += 1
            assert match.group(1) == value, f"{name}: documented {match.group(1)!r}, {makefile} says {value!r}"
    assert checked >= 3


# -- links ---------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("document", DOCUMENTS, ids=lambda p: str(p.relative_to(REPO)))
def test_every_internal_link_resolves(document: Path):
    broken = []
    targets = links(document.read_text())
    for target in targets:
        if re.match(r"^[a-z]+:", target):  # http(s), mailto: not this test's business
            continue
        path, _, anchor = target.partition("#")
        file = (document.parent / unquote(path)).resolve() if path else document
        if not file.exists():
            broken.append(f"{target}: no file {file.relative_to(REPO) if file.is_relative_to(REPO) else file}")
        elif anchor and file.suffix == ".md" and anchor not in headings(file.read_text()):
            broken.append(f"{target}: no heading #{anchor} in {file.relative_to(REPO)}")
    assert broken == []
    assert targets or document.name != "README.md", "the README links into docs/"


def test_the_readme_links_every_document():
    readme = {target.partition("#")[0] for target in links((REPO / "README.md").read_text())}
    missing = [f"docs/{doc.name}" for doc in (REPO / "docs").glob("*.md") if f"docs/{doc.name}" not in readme]
    assert missing == []


def test_the_anchor_rule_is_githubs():
    """The slug rule the link check relies on, on headings of the kinds the documents use."""
    sample = "# Deploy to AWS\n## 1. Prerequisites and credentials\n### `POST /trash/{id}/restore`\n## Scale\n## Scale\n"
    assert headings(sample) == {"deploy-to-aws", "1-prerequisites-and-credentials", "post-trashidrestore",
                                "scale", "scale-1"}
