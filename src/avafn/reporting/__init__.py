"""What avafn shows: the paper's tables, figures and the HTML report.

- :mod:`avafn.reporting.table`: the paper's Tables 2 and 3 on a feature store;
- :mod:`avafn.reporting.reproduce`: MELD.Raw to those tables in one call;
- :mod:`avafn.reporting.plots`: report figures (matplotlib);
- :mod:`avafn.reporting.html`: the self-contained HTML report of predictions (its CSS,
  JavaScript and page template are package data under ``reporting/assets/``).
"""
