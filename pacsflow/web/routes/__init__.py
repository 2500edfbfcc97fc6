"""The JSON API, one module per resource; the HTML pages live in pacsflow.web.pages."""
