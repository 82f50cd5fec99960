"""Matplotlib drawing only: arrays (or result objects read by their fields) in, ``Figure`` out.

A low layer (just above config): it imports nothing of kdlens but :mod:`kdlens.errors` and its
own modules, so every layer above — explain, studies, report, cli — may draw with it.  It
computes no statistics beyond what it draws: a mean ± std over folds
(:mod:`~kdlens.figures.summary`), where to place a legend or the projection's templates.

- :mod:`~kdlens.figures.style`: the print style (:func:`~kdlens.figures.style.paper_style`),
  page widths, PNG / SVG / PDF bytes and files, legends outside the data;
- :mod:`~kdlens.figures.summary`: numbers over folds / seeds (mean, ± std, each fold);
- :mod:`~kdlens.figures.embed`, :mod:`~kdlens.figures.similarity`,
  :mod:`~kdlens.figures.softlabels`: the figures of the three papers.
"""
