// MathJax configuration for pymdownx.arithmatex (generic mode); MathJax itself is loaded by the
// browser, nothing is bundled at build time.
window.MathJax = {
  tex: {
    inline: [["\\(", "\\)"]],
    display: [["\\[", "\\]"]],
    processEscapes: true,
    processEnvironments: true,
  },
  options: {
    ignoreHtmlClass: ".*|",
    processHtmlClass: "arithmatex",
  },
};
