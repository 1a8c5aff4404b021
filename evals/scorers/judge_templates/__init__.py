"""Judge prompt templates shipped verbatim as package data (JUDGE_PROMPTS.md); see
``ftsafety.evals.scorers.templates`` for their sources, hashes and how they are filled."""
