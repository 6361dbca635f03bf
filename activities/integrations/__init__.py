"""Users' connections to Google and Microsoft (calendar and mail): their sealed tokens and the calls
made with them, inside the platform only."""
