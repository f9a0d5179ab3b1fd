"""What a user reads: before/after rows and the report dict (tables), terminal output (render), PNGs (plots),
and the report folder (files). Nothing here imports the CLI; the CLI imports its formatting from here."""
from .files import write
from .plots import certification_plot
from .render import fmt, info, print_summary, print_table
from .tables import certification_rows, markdown

__all__ = ["certification_plot", "certification_rows", "fmt", "info", "markdown", "print_summary", "print_table",
           "write"]
