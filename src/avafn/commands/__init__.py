"""One module per CLI command group; each defines ``register(subparsers)``.

Commands hold no logic of their own: they parse arguments and call library functions.
:data:`COMMANDS` names every command, the module that registers it and its one-line help, so
that ``avafn --help`` lists the commands without importing their modules' dependencies.
"""

#: command -> (module that registers it, one-line help), in the order ``avafn --help`` lists them
COMMANDS: dict[str, tuple[str, str]] = {
    "extract": ("avafn.commands.extract", "extract per-utterance features into a feature store"),
    "train": ("avafn.commands.train", "train AVAFN on a feature store (one model per seed)"),
    "evaluate": ("avafn.commands.train", "score a run: report.json, report.md, plots"),
    "table": ("avafn.commands.train", "the paper's Tables 2 and 3 on a feature store"),
    "run": ("avafn.commands.train", "run folder tools (convert the earlier layout)"),
    "demo": ("avafn.commands.train", "MELD → fine-tuned text encoder → AVAFN → report, on CPU"),
    "predict": ("avafn.commands.predict",
                "predict the emotions of a new conversation (video + segments, or clips)"),
    "reproduce": ("avafn.commands.reproduce", "MELD.Raw -> features -> the paper's Tables 2 and 3"),
    "store": ("avafn.commands.store", "inspect and repair a feature store"),
    "finetune": ("avafn.commands.finetune", "fine-tune a feature extractor on a corpus (text)"),
}


def help_of(command: str) -> str:
    """The one-line help of a command (the same text in ``avafn --help`` and its own parser)."""
    return COMMANDS[command][1]
