"""Speech tokens for the TDNN /b/ /d/ /g/ experiment: label readers, token tables, features."""
