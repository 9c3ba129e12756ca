// MathJax set-up for pymdownx.arithmatex (generic mode): \( \) inline, \[ \] display.
// MathJax itself is the local copy in javascripts/vendor/mathjax/ (see docs/hooks.py).
window.MathJax = {
  tex: {
    inlineMath: [["\\(", "\\)"]],
    displayMath: [["\\[", "\\]"]],
    processEscapes: true,
    processEnvironments: true,
  },
  options: {
    ignoreHtmlClass: ".*|",
    processHtmlClass: "arithmatex",
  },
};

// The theme's document$ emits once for the page first shown and once more after each instant
// navigation. MathJax typesets the first page itself when it starts (its startup may not
// even exist yet at that point: this file runs before the MathJax script), so only the later
// emissions need a typeset here; typesetting the first page again would also set MathJax on
// its own output.
if (typeof document$ !== "undefined") {
  let first = true;
  document$.subscribe(() => {
    if (first) {
      first = false;
      return;
    }
    const mj = window.MathJax;
    if (!mj || !mj.startup || !mj.startup.promise) return;
    mj.startup.promise.then(() => {
      if (mj.startup.output && mj.startup.output.clearCache) mj.startup.output.clearCache();
      mj.typesetClear();
      mj.texReset();
      return mj.typesetPromise();
    });
  });
}
