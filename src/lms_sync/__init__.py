"""lms-sync: unified LMS progress sync."""

__version__ = "0.1.0"
