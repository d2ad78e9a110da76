"""Every page route: each page module's ``urlpatterns``."""

from . import auth, borrower, lender

app_name = "pages"

urlpatterns = [*auth.urlpatterns, *borrower.urlpatterns, *lender.urlpatterns]
