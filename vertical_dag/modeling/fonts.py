"""Fonts for Chinese (and Japanese / Korean) text: the report's CSS font stack and matplotlib's font choice.

Debian's `fonts-noto-cjk` (or `fonts-wqy-microhei`) provides one; without any, plots still render, with
boxes in place of CJK characters, and the page falls back to the browser's own fonts.
"""

from __future__ import annotations

import re

CJK_FAMILIES = (
    "Noto Sans CJK SC", "Noto Sans CJK JP", "Noto Serif CJK SC", "Source Han Sans SC", "Source Han Sans CN",
    "WenQuanYi Micro Hei", "WenQuanYi Zen Hei", "PingFang SC", "Microsoft YaHei", "SimHei", "AR PL UMing CN",
)
CSS_FONT_STACK = "system-ui,-apple-system,'Segoe UI'," + ",".join(f"'{f}'" for f in CJK_FAMILIES) + ",sans-serif"
_CJK_FILE = re.compile(r"cjk|wqy|wenquanyi|sourcehan|uming|ukai|simhei|yahei|pingfang", re.IGNORECASE)


def cjk_font() -> str | None:
    """The first installed CJK family matplotlib can use; fonts installed after its font cache was built are
    added from the system font folders, so a fresh `apt-get install fonts-noto-cjk` is picked up."""
    from matplotlib import font_manager

    def installed() -> set[str]:
        return {f.name for f in font_manager.fontManager.ttflist}

    names = installed()
    if not any(f in names for f in CJK_FAMILIES):
        for path in font_manager.findSystemFonts():
            if _CJK_FILE.search(path):
                try:
                    font_manager.fontManager.addfont(path)
                except (OSError, RuntimeError, ValueError):  # a font file matplotlib cannot read: skip it
                    continue
        names = installed()
    return next((f for f in CJK_FAMILIES if f in names), None)


def use_cjk_font() -> str | None:
    """Put the installed CJK family first in matplotlib's sans-serif list (None: none installed)."""
    from matplotlib import rcParams

    family = cjk_font()
    if family is not None:
        rcParams["font.sans-serif"] = [family, *(f for f in rcParams["font.sans-serif"] if f != family)]
        rcParams["font.family"] = "sans-serif"
        rcParams["axes.unicode_minus"] = False  # CJK fonts often lack U+2212; use '-'
    return family
