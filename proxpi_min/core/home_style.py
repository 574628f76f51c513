"""The home page's inline style sheet (wide and narrow layouts), its one script and its icon."""

from __future__ import annotations

import struct

__all__ = ["FAVICON", "HEAD", "SCRIPT"]

# One request, nothing from elsewhere: the style sheet is inline, the chart inline SVG.
# The viewport line makes phones lay the page out at their width instead of zooming out.
# Below 40rem (a phone) a table of class "stack" becomes one block per row, headed by its
# cell of class "title", each other cell a line led by its column's name (its data-label);
# the chart's labels grow to stay readable once the SVG is scaled down to the screen.
HEAD = """<meta name="viewport" content="width=device-width, initial-scale=1">
<style>
body{font-family:system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;margin:0 auto;padding:1rem;max-width:64rem;color:#1d232a;background:#fafbfc;line-height:1.4;overflow-wrap:break-word}
h1{font-size:1.5rem;margin:.2rem 0 .8rem}h2{font-size:1.1rem;margin:1.4rem 0 .5rem;border-bottom:1px solid #d8dee4;padding-bottom:.2rem}
.cards{display:grid;grid-template-columns:repeat(auto-fit,minmax(9.5rem,1fr));gap:.6rem;margin:0}
.cards div{background:#fff;border:1px solid #d8dee4;border-radius:6px;padding:.5rem .7rem}
.cards dt{font-size:.8rem;color:#57606a}.cards dd{margin:0;font-size:1.25rem;font-variant-numeric:tabular-nums}
.wide{overflow-x:auto}table{border-collapse:collapse;width:100%;font-size:.9rem;background:#fff}
th,td{text-align:left;padding:.3rem .5rem;border-bottom:1px solid #eaeef2;vertical-align:top}
td.n,th.n{text-align:right;font-variant-numeric:tabular-nums}td{overflow-wrap:anywhere}
td.n,time{white-space:nowrap}
.ok{color:#1a7f37}.bad{color:#cf222e}.warn{color:#9a6700}
svg{width:100%;height:auto;background:#fff;border:1px solid #d8dee4;border-radius:6px}
#chart text{font-size:11px;fill:#1d232a}
.legend span{display:inline-block;width:.8rem;height:.25rem;margin:0 .3rem .2rem .8rem;vertical-align:middle}
code{overflow-wrap:anywhere}input,button{font:inherit;margin:.1rem 0;max-width:100%}
@media (max-width:40rem){
body{padding:.75rem}
.stack,.stack tbody,.stack td{display:block}
.stack thead{display:none}
.stack tr{display:flex;flex-direction:column;border:1px solid #d8dee4;border-radius:6px;margin:0 0 .6rem;background:#fff;overflow:hidden}
.stack td,.stack td.n{position:relative;padding:.3rem .5rem .3rem 7.5rem;text-align:left}
.stack td::before{content:attr(data-label);position:absolute;left:.5rem;width:6.5rem;color:#57606a;font-size:.8rem;line-height:1.6}
.stack td.title,.stack td[colspan]{order:-1;padding-left:.5rem}
.stack td.title{background:#f6f8fa;font-weight:600}
.stack td.title::before,.stack td[colspan]::before{content:none}
#chart text{font-size:22px}
#chart polyline{stroke-width:3}
}
</style>
"""

# The invalidation buttons: DELETE /cache/<target>, with the admin token when one is set.
SCRIPT = """
<script>
async function invalidate(target) {
  const token = document.getElementById("token");
  const headers = token && token.value ? {"Authorization": "Bearer " + token.value} : {};
  const response = await fetch("/cache/" + encodeURIComponent(target), {method: "DELETE", headers});
  document.getElementById("result").textContent = response.status + " " + await response.text();
}
</script>
"""


def _icon() -> bytes:
    """A 16x16 blue square with a white "P", as a 1-bit ICO file."""
    rows = [0] * 3 + [0x7C0, 0x7E0, 0x630, 0x630, 0x630, 0x7E0, 0x7C0, 0x600, 0x600, 0x600] + [0] * 3
    width = height = 16
    entry_at = 6 + 16  # ICONDIR, then one ICONDIRENTRY
    pixels = b"".join(struct.pack(">H2x", row) for row in reversed(rows))  # bottom-up, 4-byte rows
    mask = bytes(4 * height)  # every pixel opaque
    bitmap = (
        struct.pack("<IiiHHIIiiII", 40, width, 2 * height, 1, 1, 0, 0, 0, 0, 2, 0)  # BITMAPINFOHEADER
        + bytes((0xB0, 0x6A, 0x1F, 0)) + bytes((0xFF, 0xFF, 0xFF, 0))  # palette (BGRx): blue, white
        + pixels
        + mask
    )
    header = struct.pack("<HHH", 0, 1, 1) + struct.pack("<BBBBHHII", width, height, 2, 0, 1, 1, len(bitmap), entry_at)
    return header + bitmap


FAVICON = _icon()  # GET /favicon.ico
