from rest_framework.pagination import PageNumberPagination


class LoanPagination(PageNumberPagination):
    """``?page=N`` (and ``?page_size=``, at most 200); the answer has count, next, previous, results."""

    page_size_query_param = "page_size"
    max_page_size = 200
