// MathJax settings for pymdownx.arithmatex (generic mode): typeset only the math it marked.
// The MathJax file itself ships with the docs (docs/javascripts/mathjax/tex-svg.js): no CDN.
window.MathJax = {
  tex: {inlineMath: [["\\(", "\\)"]], displayMath: [["\\[", "\\]"]], processEscapes: true, processEnvironments: true},
  options: {ignoreHtmlClass: ".*|", processHtmlClass: "arithmatex"},
  svg: {fontCache: "global"}
};
