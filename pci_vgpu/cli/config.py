"""Loading pci_vgpu's configuration for the command line.

The CLI reads oslo.config files given with ``--config-file`` /
``--config-dir``; with neither, it reads the usual places
(``~/.pci-vgpu/``, ``/etc/pci-vgpu/`` ...) and, when nothing is found there,
the bundled ``defaults.conf``.  The bundled file describes the embedded
defaults (the bundled libvirt test host and XAPI simulator) so that every
command works on a laptop with no file at all.  User files never *add to* the
bundled one: multi-valued options such as ``[pci] alias`` would otherwise mix
the demo's aliases into an operator's.
"""

from __future__ import annotations

import difflib
import glob
import os
import typing as ty

from oslo_config import cfg
from oslo_log import log as logging

from pci_vgpu import conf as pci_conf
from pci_vgpu import devspec
from pci_vgpu import exception
from pci_vgpu.cli import flavors

LOG = logging.getLogger(__name__)

PROJECT = "pci-vgpu"
BUNDLED_DEFAULTS = os.path.join(os.path.dirname(__file__), "defaults.conf")


class ConfigFileNotFound(exception.Invalid):
    msg_fmt = "Configuration %(kind)s %(path)s does not exist; give an existing path."


class ConfigFileInvalid(exception.Invalid):
    msg_fmt = "Configuration in %(path)s cannot be read: %(reason)s"


class ConfigOptionInvalid(exception.Invalid):
    msg_fmt = "Option [%(group)s] %(option)s in %(path)s is not valid: %(reason)s"


def _check_paths(paths: ty.Sequence[str], kind: str, check: ty.Callable[[str], bool]) -> None:
    for path in paths:
        if not check(path):
            raise ConfigFileNotFound(kind=kind, path=path)


def choose_files(files: ty.Sequence[str], dirs: ty.Sequence[str]) -> tuple[list[str], list[str]]:
    """Return the (files, dirs) to parse, falling back to the bundled file.

    :raises: ConfigFileNotFound naming a file or directory that is missing.
    """
    _check_paths(files, "file", os.path.isfile)
    _check_paths(dirs, "directory", os.path.isdir)
    if files or dirs:
        return list(files), list(dirs)
    found = cfg.find_config_files(project=PROJECT)
    found_dirs = cfg.find_config_dirs(project=PROJECT)
    if found or found_dirs:
        return list(found), list(found_dirs)
    return [BUNDLED_DEFAULTS], []


def load(files: ty.Sequence[str] = (), dirs: ty.Sequence[str] = (),
         conf: cfg.ConfigOpts | None = None) -> cfg.ConfigOpts:
    """(Re)load ``conf`` (the global CONF by default) from files only.

    Command-line options are cliff's business, so oslo.config sees no argv.
    The object is reset first: in-process runners (tests, the demo, cliff's
    interactive mode) load configuration more than once.

    :raises: ConfigFileNotFound, ConfigFileInvalid.
    """
    conf = pci_conf.CONF if conf is None else conf
    flavors.register_opts(conf)
    chosen_files, chosen_dirs = choose_files(files, dirs)
    conf.reset()
    try:
        conf([], project=PROJECT, default_config_files=chosen_files,
             default_config_dirs=chosen_dirs, validate_default_values=True)
    except (cfg.Error, ValueError) as exc:
        raise ConfigFileInvalid(path=", ".join(chosen_files + chosen_dirs),
                                reason=str(exc).strip().splitlines()[0]) from exc
    _validate(conf, ", ".join(chosen_files + chosen_dirs))
    conf_state.update(files=chosen_files, dirs=chosen_dirs)
    for _key, value, problem in problems(conf):
        LOG.warning("%(value)s: %(problem)s", {"value": value, "problem": problem})
    return conf


#: What :func:`load` read last (for ``config check``).
conf_state: dict[str, list[str]] = {"files": [], "dirs": []}


def parsed_files(files: ty.Sequence[str], dirs: ty.Sequence[str]) -> list[str]:
    """The files oslo.config reads, in its order (``*.conf`` of each dir)."""
    found = list(files)
    for folder in dirs:
        found += sorted(glob.glob(os.path.join(folder, "*.conf")))
    return found


def _known(conf: cfg.ConfigOpts) -> dict[str, set[str]]:
    """Section -> option names pci-vgpu reads there (deprecated names too)."""
    known: dict[str, set[str]] = {"DEFAULT": set()}
    for group, opts in pci_conf.list_opts() + [(flavors.GROUP.name, flavors.OPTS)]:
        known.setdefault(group, set())
        for opt in opts:
            known[group].add(opt.dest)
            for old in opt.deprecated_opts:
                known.setdefault(old.group or group, set()).add(old.name or opt.dest)
    for name in conf.database:  # every oslo.db option is read there
        known["database"].add(name)
    return known


def _suggest(word: str, choices: ty.Iterable[str]) -> str:
    close = difflib.get_close_matches(word, sorted(choices), n=1)
    return " (did you mean %s?)" % close[0] if close else ""


def unknown_options(conf: cfg.ConfigOpts, paths: ty.Sequence[str]) -> list[tuple[str, str]]:
    """(where, problem) for every section and option pci-vgpu does not know."""
    known = _known(conf)
    found: list[tuple[str, str]] = []
    for path in paths:
        sections: dict[str, dict[str, ty.Any]] = {}
        cfg.ConfigParser(path, sections).parse()
        for section, options in sections.items():
            if section not in known:
                found.append(("[%s] in %s" % (section, path), (
                    "unknown section%s; pci-vgpu ignores its %d option(s) and uses the "
                    "defaults instead" % (_suggest(section, known), len(options)))))
                continue
            for option in sorted(set(options) - known[section]):
                found.append(("[%s] %s in %s" % (section, option, path), (
                    "unknown option%s; it is ignored" % _suggest(option, known[section]))))
    return found


def problems(conf: cfg.ConfigOpts) -> list[tuple[str, str, str]]:
    """(key, value, problem) rows: unknown sections, options, device_spec keys."""
    rows = [("[config]", where, problem) for where, problem in unknown_options(
        conf, parsed_files(conf_state["files"], conf_state["dirs"]))]
    try:
        specs = devspec.Whitelist(conf.pci.device_spec).specs
    except exception.PciVgpuException:
        return rows  # reported as an error of its own
    for spec in specs:
        for key in spec.unknown_keys:
            rows.append(("[pci] device_spec", "[pci] device_spec key %r" % key, (
                "unknown key%s in %s; it is taken as a tag no alias can ask for "
                "(known keys: %s)" % (_suggest(key, devspec.KNOWN_KEYS), spec.label,
                                      ", ".join(devspec.KNOWN_KEYS)))))
    return rows


def _validate(conf: cfg.ConfigOpts, path: str) -> None:
    """Read every pci_vgpu option now: oslo.config checks values lazily.

    :raises: ConfigOptionInvalid naming the group, option and allowed values.
    """
    for group, opts in pci_conf.list_opts() + [(flavors.GROUP.name, flavors.OPTS)]:
        for opt in opts:
            try:
                getattr(conf[group], opt.dest)
            except (cfg.Error, ValueError) as exc:
                reason = str(exc).rsplit("is not valid: ", 1)[-1]
                raise ConfigOptionInvalid(group=group, option=opt.name, path=path,
                                          reason=reason) from exc
