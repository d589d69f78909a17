"""Sample-quality and likelihood evaluation; import the modules (`metrics`, `features`, `likelihood`)."""
