"""A function as the (built) template declares it: handler, code and layer directories, memory, timeout and
its environment variables with parameters and intrinsics resolved.

Read with SAM CLI's own providers (what ``sam local invoke`` uses: Globals merged, ``!Ref``/``!Sub`` resolved,
CodeUri/ContentUri relative to the template), so the invoke runner and ``imgsim serve`` both see exactly what
the template says, not a copy of it.
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

# SAM's resolver ignores empty parameter overrides (a Ref would become the parameter's name), so a placeholder
# goes in for parameters without a default and is blanked out of the resolved values.
EMPTY_PARAMETER = "__invoke_empty_parameter__"


class TemplateError(Exception):
    """The template or the function in it cannot be used (missing, unknown function, not built)."""


@dataclass(frozen=True)
class FunctionConfig:
    name: str
    handler: str
    runtime: str
    memory_mb: int
    timeout_s: int
    code_dir: Path
    layer_dirs: list[Path]
    variables: dict[str, str]
    logging_config: Any = field(default=None, compare=False)


def read_function(
    function: str, template: str | os.PathLike[str], *, parameter_overrides: dict[str, str] | None = None,
    region: str = "us-east-1", quiet: bool = False,
) -> FunctionConfig:
    from samcli.lib.providers.sam_function_provider import SamFunctionProvider
    from samcli.lib.providers.sam_stack_provider import SamLocalStackProvider
    from samcli.yamlhelper import yaml_parse

    template_path = Path(template)
    if not template_path.is_file():
        raise TemplateError(f"{template_path} not found: run `sam build` (or `make build`) first")
    document = yaml_parse(template_path.read_text())
    overrides = dict(parameter_overrides or {})
    for name, declared in (document.get("Parameters") or {}).items():
        if name not in overrides and "Default" not in declared:
            if not quiet:
                print(f"parameter {name} has no default; using an empty string", file=sys.stderr)
            overrides[name] = EMPTY_PARAMETER
    stacks, _ = SamLocalStackProvider.get_stacks(
        str(template_path), parameter_overrides=overrides, global_parameter_overrides={"AWS::Region": region},
    )
    provider = SamFunctionProvider(stacks, use_raw_codeuri=True)
    fn = provider.get(function)
    if fn is None:
        known = sorted(f.name for f in provider.get_all())
        raise TemplateError(f"no function {function!r} in {template_path}; known: {', '.join(known)}")
    base = template_path.resolve().parent
    variables = {str(k): _blank(v) for k, v in ((fn.environment or {}).get("Variables") or {}).items()}
    return FunctionConfig(
        name=fn.name, handler=fn.handler, runtime=fn.runtime, memory_mb=int(fn.memory or 128),
        timeout_s=int(fn.timeout or 3), code_dir=base / fn.codeuri,
        layer_dirs=[base / layer.codeuri for layer in fn.layers], variables=variables,
        logging_config=fn.logging_config,
    )


def _blank(value: Any) -> str:
    return str(value).replace(EMPTY_PARAMETER, "")
