"""Per-week lab code: experiments a notebook and its benchmark share. Takes the student's functions as
arguments and never carries an exercise's answer."""
