"""How the back-office shows a date-time: "2026-11-29 12:31:05 UTC", not Django's English default
"Nov. 29, 2026, 12:31 p.m." (no seconds, no time zone). Support compare the admin's times with the API's
RFC 3339 ones ("2026-11-29T12:31:05Z") and with logs, where a minute or a zone off is another event.

A locale's formats win over the DATETIME_FORMAT setting (Django always localizes), hence a format module
(FORMAT_MODULE_PATH). Only how times are shown changes: every other format, input formats included, is
Django's own for English."""

DATETIME_FORMAT = "Y-m-d H:i:s T"
SHORT_DATETIME_FORMAT = "Y-m-d H:i:s T"
